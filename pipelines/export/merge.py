"""An adapter folded into its base: a standard Hugging Face model folder (safetensors, tokenizer
with its chat template, generation config) that `AutoModelForCausalLM.from_pretrained` loads
anywhere, with the outputs of base + adapter.

PEFT does the folding (`merge_and_unload`) for every method that changes weights: the LoRA family
(incl. DoRA, VeRA, LoHa, LoKr, AdaLoRA, PiSSA/OLoRA, whose saved adapters are relative to the
original base), IA3 and LayerNorm tuning. Prompt learning adds virtual tokens in front of every
input, which no weight of the model can hold, so it is refused.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipelines import models
from pipelines.export import Cancelled, ExportError, atomic_folder, check_target, run_stoppable

# PEFT's names for the adapters that live in front of the input rather than in the weights
PROMPT_LEARNING = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")


def adapter_type(adapter_dir: Path) -> str:
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.exists():
        raise ExportError(f"{adapter_dir} has no adapter_config.json; expected a PEFT adapter folder")
    return json.loads(config.read_text()).get("peft_type", "")


# the studio's own adapter types (pipelines/methods/native): not changes of weights either
NOT_WEIGHTS = {"BOTTLENECK": ("bottleneck", "it adds small networks with a non-linearity between the model's "
                              "layers, which no weight of the model can hold"),
               "REFT": ("ReFT", "it edits the hidden states the model computes, which no weight of the model "
                        "can hold"),
               "MAM": ("MAM", "it adds learned keys and values to every attention layer and small networks beside "
                       "the feed-forward blocks, which no weight of the model can hold"),
               "UNIPELT": ("UniPELT", "its parts are switched by learned gates that read each token, and it adds "
                           "learned keys and values to every attention layer, which no weight of the model can "
                           "hold")}


def why_unmergeable(adapter_dir: Path) -> str | None:
    """Why this adapter cannot be folded into its base's weights (a clause), or None when it can."""
    kind = adapter_type(adapter_dir)
    if kind in NOT_WEIGHTS:
        return NOT_WEIGHTS[kind][1]
    if kind in PROMPT_LEARNING:
        return "it learned virtual tokens put in front of every input, not a change of the model's weights"
    return None


def check_mergeable(adapter_dir: Path) -> None:
    why = why_unmergeable(adapter_dir)
    if why is None:
        return
    kind = adapter_type(adapter_dir)
    name = NOT_WEIGHTS[kind][0] if kind in NOT_WEIGHTS else kind.replace("_", " ").lower()
    other = "LoRA or SHiRA" if kind in NOT_WEIGHTS else "LoRA"
    raise ExportError(f"a {name} adapter cannot be merged: {why}, so it only works loaded beside its base "
                      f"(train {other} to get a mergeable result)")


def merge_adapter(base: str, adapter_dir: Path, out_dir: Path, on_progress=None, cancelled=None) -> dict:
    """Write base + adapter as one model folder at `out_dir` (all or nothing). `cancelled()` true: stopped
    with Cancelled between and within its steps (run_stoppable), nothing left behind.

    The base is loaded in the dtype it is stored in, not float32: PEFT computes each change in float32
    anyway (on the CPU for a bf16 or fp16 weight) and adds it in the weight's dtype; float32 doubled the
    memory of a bf16 base (an 8B model: 32 GB instead of 16), which a QLoRA user has least of."""
    from peft import PeftModel

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    check_mergeable(adapter_dir)
    check_target(out_dir)  # (before minutes of loading and merging, not after them)
    say = on_progress or (lambda _text: None)
    stored = _stored_dtype(Path(base))

    def step(what: str, work):
        if cancelled is not None and cancelled():
            raise Cancelled
        say(what)
        return run_stoppable(work, cancelled)

    model = step("loading the base model", lambda: models.load_model(base, dtype=stored))
    from pipelines.methods.native import register

    register()
    model = step("adding the adapter", lambda: PeftModel.from_pretrained(model, str(adapter_dir)))
    # (the modules an adapter swaps in whole, LayerNorm tuning's, come back in PEFT's float32: all in one dtype)
    merged = step("merging the adapter into the weights", lambda: model.merge_and_unload().to(stored))
    # an adapter from a run whose loss went to NaN made a "completed" model (and GGUF) that printed only garbage.
    # Checked on the result (PEFT's safe_merge rounds a bf16 base's change to bf16 before adding it: a second
    # rounding the plain merge does not make)
    import torch

    if not all(torch.isfinite(p).all() for p in merged.parameters()):
        raise ExportError(f"the adapter in {adapter_dir} holds numbers that are not finite (NaN or infinity): the run "
                          "it came from broke down (its loss became NaN); merge a run whose loss stayed finite")
    with atomic_folder(out_dir) as tmp:
        step("writing the merged model", lambda: (merged.save_pretrained(tmp, safe_serialization=True),
                                                  copy_tokenizer(Path(base), tmp)))
    return {"folder": str(out_dir), "bytes": folder_bytes(out_dir), "dtype": str(stored).removeprefix("torch.")}


def copy_model(model_dir: Path, out_dir: Path, cancelled=None) -> dict:
    """A whole model (full or freeze tuning) is already mergeable's result: copy it as it is (a cancel
    stops it between files, nothing left behind)."""
    models.check_local_folder(Path(model_dir))
    with atomic_folder(out_dir) as tmp:
        for item in Path(model_dir).iterdir():
            if cancelled is not None and cancelled():
                raise Cancelled
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
    return {"folder": str(out_dir), "bytes": folder_bytes(out_dir)}


def copy_tokenizer(source: Path, target: Path) -> None:
    """The base's tokenizer and chat template, exactly as stored (re-saving through transformers
    could rewrite them)."""
    found = [name for name in TOKENIZER_FILES if (source / name).exists()]
    if not found:
        models.load_tokenizer(str(source)).save_pretrained(target)
    for name in found:
        shutil.copy2(source / name, target / name)


def _stored_dtype(base: Path):
    import torch

    config = json.loads((base / "config.json").read_text()) if (base / "config.json").exists() else {}
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
