"""A finished run's adapter as one .zip file, for the run's panel to link: its folder was named by its path on
the server's machine only, so a person on another machine (a shared link, a remote server) could not take out
what they trained without the Export tab merging it into a whole model.

The archive is written as it is sent (launch.Downloads), never kept: nothing to go stale or fill the disk, and
the adapter folder is read as it is. Weights are stored as they are (safetensors do not compress); the small
text files are compressed. Everything sits in one folder named like the file, as `unzip` makes it."""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipelines.events import ADAPTER
from pipelines.methods import METHODS
from studio.export_service import DOWNLOAD_ROUTE, safe_name

CHUNK = 1 << 20
STORED = (".safetensors", ".bin", ".pt", ".gguf")  # already dense: compressing them costs time for nothing
RUN_ID = re.compile(r"r\d{8}-\d{6}-[0-9a-f]{4}")


def _dataset_name(studio, run: dict) -> str | None:
    dataset = studio.store.get_dataset(run["dataset_id"], deleted=True) if run.get("dataset_id") else None
    return dataset["name"] if dataset else None


def archive_name(studio, run: dict) -> str:
    """The file's name: what the run learned and on what, then its id ('lora-quillpad_faq-r20261207-…zip')."""
    return f"{safe_name(run['method'] + '-' + (_dataset_name(studio, run) or 'run'))}-{run['id']}.zip"


def members(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def size(folder: Path) -> int:
    """The bytes of the files the archive holds (the archive is about as large: the weights are stored as they are)."""
    return sum(p.stat().st_size for p in members(folder))


def download(studio, run_id: str, name: str) -> tuple[str, Path, str] | None:
    """(archive name, adapter folder, the README it carries) when `name` is the archive of run `run_id`'s adapter;
    None otherwise."""
    run = studio.get_run(run_id) if RUN_ID.fullmatch(run_id or "") else None
    folder = studio.result_dir(run_id) if run is not None and run["status"] == "completed" else None
    if folder is None or folder.name != ADAPTER:  # (a whole model, an unfinished run, an unknown id)
        return None
    expected = archive_name(studio, run)
    return (expected, folder, readme(studio, run, folder, expected.removesuffix(".zip"))) if name == expected else None


def readme(studio, run: dict, folder: Path, top: str) -> str:
    """What the archive is and the code that loads it, in place of PEFT's model card (its template's "[More
    Information Needed]" throughout, and the base named by a path on the server)."""
    method, dataset = METHODS.get(run["method"]), _dataset_name(studio, run)
    return (f"# {top}\n\nA {method.label if method else run['method']} adapter trained with Tune Studio (run "
            f"{run['id']}){' on the dataset ' + repr(dataset) if dataset else ''}. It loads on its base model "
            f"with PEFT; run this next to this folder:\n\n```python\n{load_code(studio, run, folder, top)}\n```\n")


def url(run_id: str, name: str) -> str:
    """The link to run `run_id`'s archive `name`, relative to the page (it works behind a path prefix too)."""
    from urllib.parse import quote

    return f"{DOWNLOAD_ROUTE.lstrip('/')}/{run_id}?file={quote(name)}"


class _Pending:
    """A write-only stream that hands out what was written since it was last asked (zipfile writes an
    archive to a stream it cannot seek in, with each member's sizes after its data)."""

    def __init__(self):
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


README = "README.md"


def stream(folder: Path, top: str, readme_text: str | None = None) -> Iterator[bytes]:
    """The archive of `folder`'s files under the folder `top`, in pieces of about CHUNK bytes; with `readme_text`,
    that as its README.md instead of the folder's."""
    pending = _Pending()
    with zipfile.ZipFile(pending, "w") as archive:
        if readme_text is not None:
            info = zipfile.ZipInfo(f"{top}/{README}", time.localtime()[:6])
            info.external_attr = 0o644 << 16  # (readable, as the adapter's own files are)
            archive.writestr(info, readme_text, compress_type=zipfile.ZIP_DEFLATED)
        for path in members(folder):
            if readme_text is not None and path.name == README:
                continue
            dense = path.suffix in STORED
            info = zipfile.ZipInfo.from_file(path, f"{top}/{path.name}")
            info.compress_type = zipfile.ZIP_STORED if dense else zipfile.ZIP_DEFLATED
            # (the size is in `info`: zipfile writes zip64 sizes for a member near 2 GiB or past it)
            with path.open("rb") as source, archive.open(info, "w") as out:
                while block := source.read(CHUNK):
                    out.write(block)
                    if pending.parts:
                        yield pending.take()
            yield pending.take()
    yield pending.take()


def load_code(studio, run: dict, folder: Path, folder_name: str) -> str:
    """Python that loads the unzipped adapter on its base outside the studio (PEFT), for the run's panel. The
    base is the one the run trained on, named as this machine has it: the built-in model is a copy made from its
    4-bit GGUF, so the hub's full-precision SmolLM2 is close to it, not the same."""
    import json

    from pipelines import models
    from pipelines.methods.native import TUNERS

    method = METHODS.get(run["method"])
    scores = bool(method and method.reward_model)
    base = run["model"]  # (a run started from another's result: that result's base, or its whole model)
    built_in = models.is_default(base)
    if built_in:  # where the studio keeps it (never converted here: the panel reads, it makes nothing)
        base = str(Path(studio.model_cache) / models.DEFAULT_MODEL)
    try:
        kind = json.loads((folder / "adapter_config.json").read_text()).get("peft_type")
    except (OSError, ValueError):
        kind = None
    auto = "AutoModelForSequenceClassification" if scores else "AutoModelForCausalLM"
    lines = ["from peft import PeftModel", f"from transformers import {auto}, AutoTokenizer", ""]
    if str(kind).lower() in TUNERS:  # PEFT knows them once they are registered
        lines += ["# Tune Studio's own adapter: its code on the Python path, registered with PEFT",
                  "from pipelines.methods.native import register", "register()", ""]
    # (each comment on a line of its own: the page's code box does not wrap, and cut them off)
    if built_in:
        lines += ["# the base: the built-in model's folder on the server. Elsewhere, export the built-in",
                  "# model from the Export tab (merged model folder) and put that folder here"]
    elif Path(base).is_absolute():
        lines.append("# the base: its folder on the server (copy it, or export it from the Export tab)")
    lines += [f"base = {auto}.from_pretrained({base!r}{', num_labels=1' if scores else ''})",
              "# the unzipped folder", f"tokenizer = AutoTokenizer.from_pretrained({folder_name!r})"]
    if scores:  # as the studio scores: padding read as padding (a base without a pad token uses its end token)
        lines.append("base.config.pad_token_id = tokenizer.pad_token_id")
    lines.append(f"model = PeftModel.from_pretrained(base, {folder_name!r})")
    chat = '[{"role": "user", "content": "Hello!"}' + (', {"role": "assistant", "content": "Hi, how can I help?"}]'
                                                       if scores else "]")
    asked = (f"inputs = tokenizer.apply_chat_template({chat}, {'' if scores else 'add_generation_prompt=True, '}"
             'return_dict=True, return_tensors="pt")')
    if scores:
        lines += ["", "# a reply's score (higher: more like the preferred replies)", asked,
                  'print(model(**inputs).logits[0, 0].item())']
    else:
        lines += ["", "# a reply", asked, "out = model.generate(**inputs, max_new_tokens=64)",
                  'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))']
    return "\n".join(lines)
