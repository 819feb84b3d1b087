"""Merging: every mergeable method's adapter folded into its base gives a plain model folder with
the outputs of base + adapter; prompt learning is refused in one sentence; model merging (SLERP,
linear, TIES, DARE, task arithmetic) keeps its ends and its arithmetic."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pipelines.export import ExportError
from pipelines.export.merge import check_mergeable, merge_adapter
from pipelines.export.model_merge import MERGE_METHODS, check, merge_models
from pipelines.methods import METHODS, Setup, parse

MERGEABLE = [k for k, m in METHODS.items() if m.artifact == "adapter" and m.mergeable]
PROMPT_LEARNING = [k for k, m in METHODS.items() if m.prompt_learning]
PROMPT = [[1, 504, 1340, 314, 253, 2206, 30, 2]]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROMPT)).logits[0]


def make_adapter(key: str, base_dir, out_dir, seed: int = 0):
    """The method's adapter, as the studio configures it, with random (non-zero) learned weights:
    what a run leaves, without the minutes of training."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    method = METHODS[key]
    config = method.peft_config(parse(method.params, {}), Setup(model_path=str(base_dir), total_steps=10))
    if method.converts_base:
        # PiSSA/OLoRA runs save an adapter converted back to the untouched base (train_sft.save):
        # that is a plain LoRA adapter, which is what a merge meets
        config.init_lora_weights = True
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), config)
    torch.manual_seed(seed)
    for param in model.parameters():
        if param.requires_grad:
            param.data += 0.05 * torch.randn_like(param)
    model.save_pretrained(out_dir)
    return model


@pytest.mark.parametrize("key", MERGEABLE)
def test_merged_model_equals_base_plus_adapter(key, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    make_adapter(key, tiny_model_dir, tmp_path / "adapter")
    # the reference: the base with the saved adapter loaded on top, as chat loads a run
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                             str(tmp_path / "adapter")).eval()
    expected = logits(with_adapter)
    base_logits = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    assert not torch.allclose(expected, base_logits, atol=1e-3), "the adapter must change the outputs"

    summary = merge_adapter(str(tiny_model_dir), tmp_path / "adapter", tmp_path / "merged")
    merged_dir = tmp_path / "merged"
    # a plain Hugging Face folder: loads without PEFT, tokenizer and chat template included
    assert not (merged_dir / "adapter_config.json").exists()
    assert (merged_dir / "model.safetensors").exists() and summary["bytes"] > 0
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    diff = (logits(merged) - expected).abs().max().item()
    assert diff < 1e-4, f"{key}: merged logits differ from base + adapter by {diff}"
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(merged_dir).chat_template == \
        AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folder left


@pytest.mark.parametrize("key", PROMPT_LEARNING)
def test_prompt_learning_adapters_are_refused_in_one_sentence(key, tiny_model_dir, tmp_path):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    method = METHODS[key]
    config = method.peft_config(parse(method.params, {}), Setup(model_path=str(tiny_model_dir)))
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(tmp_path / "a")
    with pytest.raises(ExportError) as err:
        merge_adapter(str(tiny_model_dir), tmp_path / "a", tmp_path / "merged")
    assert "cannot be merged" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "merged").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


# --- model merging -------------------------------------------------------------------------------

def test_an_adapter_that_broke_down_is_not_merged(tiny_model_dir, tmp_path):
    """An adapter from a run whose loss went to NaN merged into a "completed" model that printed only garbage."""
    model = make_adapter("lora", tiny_model_dir, tmp_path / "adapter")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).fill_(float("nan"))
    model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(ExportError) as err:
        merge_adapter(str(tiny_model_dir), tmp_path / "adapter", tmp_path / "merged")
    assert str(err.value) == (f"the adapter in {tmp_path / 'adapter'} holds numbers that are not finite (NaN or "
                              "infinity): the run it came from broke down (its loss became NaN); merge a run whose "
                              "loss stayed finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


@pytest.fixture(scope="module")
def two_models(tiny_model_dir, tmp_path_factory):
    """The tiny base and a second model of its shape (the base with a LoRA merged in)."""
    out = tmp_path_factory.mktemp("models")
    make_adapter("lora", tiny_model_dir, out / "adapter", seed=1)
    merge_adapter(str(tiny_model_dir), out / "adapter", out / "tuned")
    return tiny_model_dir, out / "tuned"


def weights(folder) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_slerp_of_a_model_with_itself_is_the_model(two_models, tmp_path):
    import shutil

    base, _ = two_models
    shutil.copytree(base, tmp_path / "copy")  # the same weights under another name
    merge_models("slerp", [str(base), str(tmp_path / "copy")], tmp_path / "m", t=0.3)
    assert max_diff(weights(tmp_path / "m"), weights(base)) < 1e-6


@pytest.mark.parametrize("t", [0.0, 1.0])
def test_slerp_ends_are_the_two_models(two_models, tmp_path, t):
    base, tuned = two_models
    merge_models("slerp", [str(base), str(tuned)], tmp_path / "m", t=t)
    assert max_diff(weights(tmp_path / "m"), weights(base if t == 0 else tuned)) < 1e-6


def test_slerp_halfway_lies_on_the_arc(two_models, tmp_path):
    """SLERP at t=0.5 moves about halfway and never leaves the span between the ends: each row of
    the merge is no farther from either model's row than the two rows are from each other."""
    base, tuned = two_models
    merge_models("slerp", [str(base), str(tuned)], tmp_path / "m", t=0.5)
    a, b, m = weights(base), weights(tuned), weights(tmp_path / "m")
    key = next(k for k in a if "q_proj" in k)
    assert not torch.equal(a[key], b[key])
    gap = (a[key] - b[key]).norm(dim=1)
    assert torch.all((m[key] - a[key]).norm(dim=1) <= gap + 1e-6)
    assert torch.all((m[key] - b[key]).norm(dim=1) <= gap + 1e-6)
    assert (m[key] - a[key]).norm() > 0.3 * (b[key] - a[key]).norm()  # it moved about halfway


STOP_WHILE_MERGING = """
import sys
from pathlib import Path
import mergekit.merge
import pipelines.export
from pipelines.export import Cancelled
from pipelines.export.model_merge import merge_models

pipelines.export.STOP_POLL_S = 0.001  # the tiny merge's tensors take a few ms
tensors = []
plain_run = mergekit.merge.Executor.run

def counted_run(self, *args, **kwargs):
    for done in plain_run(self, *args, **kwargs):
        tensors.append(1)
        yield done

mergekit.merge.Executor.run = counted_run
try:
    merge_models("linear", sys.argv[1:3], Path(sys.argv[3]), cancelled=lambda: len(tensors) >= 2)
    print("merged", len(tensors))
except Cancelled:
    print("cancelled", len(tensors))
"""

STOPPABLE = """
import signal, sys, time
from pipelines.export import Cancelled, run_stoppable

signal.signal(signal.SIGINT, signal.SIG_IGN)
started = []

def spin():  # pure Python: the interrupt lands between two of its bytecodes
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        started.append(1)
    return "ran out"

t0 = time.monotonic()
try:
    run_stoppable(spin, lambda: bool(started))
except Cancelled:
    print("cancelled", round(time.monotonic() - t0) < 5)
print(run_stoppable(lambda: "done", lambda: False), signal.getsignal(signal.SIGINT) is signal.SIG_IGN)

def interrupted():
    raise KeyboardInterrupt  # not a cancel: passed on
try:
    run_stoppable(interrupted, lambda: False)
except KeyboardInterrupt:
    print("interrupt passed on")
"""


def python(code: str, *args, timeout=300) -> subprocess.CompletedProcess:
    """In a process of its own: the stop interrupts the main thread, as in a job's worker."""
    from tests.conftest import ROOT

    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_a_cancel_stops_a_merge_while_mergekit_works_and_leaves_nothing(two_models, tmp_path):
    """A cancel was only looked at before and after mergekit's merge (minutes on a big model): now it
    is looked at while mergekit works, and stops it between two tensors, nothing written."""
    base, tuned = two_models
    done = python(STOP_WHILE_MERGING, base, tuned, tmp_path / "out")
    said = done.stdout.split()
    # stopped between two tensors, before the last of its 21 (a busy machine merges a few more before it lands)
    assert said[0] == "cancelled" and 2 <= int(said[1]) < 21, (done.stdout, done.stderr)
    assert list(tmp_path.iterdir()) == []  # neither the model nor its temporary folder


def test_a_stoppable_step_stops_mid_work_and_otherwise_leaves_no_trace():
    done = python(STOPPABLE)
    assert done.stdout.splitlines() == ["cancelled True", "done True", "interrupt passed on"], done.stderr


def test_linear_and_task_arithmetic_by_hand(two_models, tmp_path):
    base, tuned = two_models
    a, b = weights(base), weights(tuned)
    merge_models("linear", [str(base), str(tuned)], tmp_path / "lin", weights=[3.0, 1.0])
    lin = weights(tmp_path / "lin")
    assert max_diff(lin, {k: 0.75 * a[k] + 0.25 * b[k] for k in a}) < 1e-6  # weights are normalised
    merge_models("task_arithmetic", [str(tuned)], tmp_path / "ta", base=str(base), weights=[2.0])
    ta = weights(tmp_path / "ta")
    assert max_diff(ta, {k: a[k] + 2.0 * (b[k] - a[k]) for k in a}) < 1e-5
    # no weights, the base among the models (as the tab suggests: a tuned model and its base): each tuned
    # model's change counts in full, shared equally (an equal share went to the base, and was dropped:
    # half of what the run learned was lost)
    merge_models("task_arithmetic", [str(tuned), str(base)], tmp_path / "ta1", base=str(base))
    assert max_diff(weights(tmp_path / "ta1"), b) < 1e-5
    # a weighted average that names a base still averages every model listed (it dropped the base's)
    merge_models("linear", [str(base), str(tuned)], tmp_path / "lin2", base=str(base))
    assert max_diff(weights(tmp_path / "lin2"), {k: 0.5 * a[k] + 0.5 * b[k] for k in a}) < 1e-6


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_sparse_merges_keep_the_density_share_of_changes(two_models, tmp_path, method):
    base, tuned = two_models
    merge_models(method, [str(tuned)], tmp_path / "m", base=str(base), weights=[1.0], density=0.5, seed=3)
    a, m = weights(base), weights(tmp_path / "m")
    key = next(k for k in a if "q_proj" in k)
    changed = (m[key] != a[key]).float().mean().item()
    assert 0.35 < changed < 0.65, f"{method} changed {changed:.0%} of the weights at density 0.5"
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


def test_ties_weights_scale_each_models_change_as_task_arithmetic_does(two_models, tmp_path):
    """mergekit's TIES divided by the weights of the models that agree: 0.3 of one model's change came out whole,
    and a weight of -1 added the change instead of removing it."""
    base, tuned = two_models
    a, b = weights(base), weights(tuned)
    for w in (0.3, -1.0):
        merge_models("ties", [str(tuned)], tmp_path / f"t{w}", base=str(base), weights=[w], density=1.0)
        assert max_diff(weights(tmp_path / f"t{w}"), {k: a[k] + w * (b[k] - a[k]) for k in a}) < 1e-5, w
    # without weights, the paper's: each kept change averaged over the models that agree on its sign (here one)
    merge_models("ties", [str(tuned)], tmp_path / "plain", base=str(base), density=1.0)
    assert max_diff(weights(tmp_path / "plain"), b) < 1e-5


def test_ties_of_two_models_typed_weights_add_and_empty_averages_where_they_agree(two_models, tmp_path):
    """A review's hand case: blank weights gave the TIES paper's merge and typed ones added the changes up, with
    nothing saying so (the tab read "empty = equal shares"; the CLI's own example typed 1 1). Both as the help
    for TIES now says: typed, each kept change scaled and added; empty, averaged over the models that agree."""
    import shutil

    from safetensors.torch import save_file

    from pipelines.export.model_merge import MERGE_METHODS

    base, tuned = two_models
    a, b = weights(base), weights(tuned)
    shutil.copytree(tuned, tmp_path / "same")  # the same change, a second model
    shutil.copytree(tuned, tmp_path / "opposite")  # half of it, the other way: outvoted on every weight
    save_file({k: a[k] - 0.5 * (b[k] - a[k]) for k in a}, str(tmp_path / "opposite" / "model.safetensors"),
              metadata={"format": "pt"})
    pair = [str(tuned), str(tmp_path / "same")]
    merge_models("ties", pair, tmp_path / "blank", base=str(base), density=1.0)
    assert max_diff(weights(tmp_path / "blank"), b) < 1e-5  # the agreeing changes averaged: the change once
    merge_models("ties", pair, tmp_path / "typed", base=str(base), weights=[1.0, 1.0], density=1.0)
    assert max_diff(weights(tmp_path / "typed"), {k: a[k] + 2 * (b[k] - a[k]) for k in a}) < 1e-5  # added up
    merge_models("ties", [str(tuned), str(tmp_path / "opposite")], tmp_path / "vote", base=str(base), density=1.0)
    assert max_diff(weights(tmp_path / "vote"), b) < 1e-5  # the outvoted change dropped, not averaged in
    said = MERGE_METHODS["ties"].weights_help
    assert "scaled by its weight and added up" in said and "averaged over the models that agree" in said


def test_a_merge_whose_tokenizer_mergekit_could_not_copy_still_has_one(two_models, tmp_path, monkeypatch):
    """mergekit logs a tokenizer it could not copy ("The merge was still successful") and goes on: the merge was
    listed as a finished model that chat and GGUF export then failed on."""
    import mergekit.merge

    from pipelines import models

    def fails(*_args, **_kwargs):
        raise OSError("the tokenizer could not be copied")

    monkeypatch.setattr(mergekit.merge, "_copy_tokenizer", fails)
    base, tuned = two_models
    merge_models("task_arithmetic", [str(tuned)], tmp_path / "m", base=str(base), weights=[1.0])
    assert (tmp_path / "m" / "tokenizer_config.json").read_text() == (base / "tokenizer_config.json").read_text()
    said = models.load_tokenizer(str(tmp_path / "m")).apply_chat_template([{"role": "user", "content": "Hi"}],
                                                                           tokenize=False)
    assert "Hi" in said


@pytest.mark.parametrize("args, message", [
    (("slerp", ["a", "b", "c"], None), "SLERP blends exactly two models; 3 were given"),
    (("ties", ["a", "b"], None), "TIES adds each model's changes to a base model; pick the base they were tuned from"),
    (("linear", ["a"], None), "Weighted average needs at least two models; 1 given"),
    (("dare_ties", ["b"], "b"), "DARE needs at least one tuned model besides the base"),
    (("linear", ["a", "a"], None), "a is named twice; a merge takes each model once (its weight says how much)"),
    (("frankenmerge", ["a", "b"], None), "unknown merge method 'frankenmerge'; choose one of "
                                         + ", ".join(MERGE_METHODS)),
])
def test_impossible_merges_are_refused_in_one_sentence(args, message):
    with pytest.raises(ExportError) as err:
        check(*args)
    assert str(err.value) == message


def test_bad_factors_are_refused():
    with pytest.raises(ExportError, match="t must be between 0 and 1; got 1.5"):
        check("slerp", ["a", "b"], None, t=1.5)
    with pytest.raises(ExportError, match="density must be more than 0 and at most 1; got 0"):
        check("ties", ["a"], "base", density=0.0)
    with pytest.raises(ExportError, match="every weight must be a finite number"):
        check("linear", ["a", "b"], None, weights=[1.0, float("nan")])


def test_models_of_different_shapes_are_refused(two_models, tmp_path):
    import shutil

    base, _ = two_models
    other = tmp_path / "other"
    shutil.copytree(base, other)
    config = json.loads((other / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="differ in architecture or size"):
        merge_models("linear", [str(base), str(other)], tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_mergeable_flag_matches_what_merging_accepts(tiny_model_dir, tmp_path):
    """The catalogue's `mergeable` says what the merge does: one adapter of each kind."""
    make_adapter("lora", tiny_model_dir, tmp_path / "lora")
    check_mergeable(tmp_path / "lora")
    assert all(not METHODS[k].mergeable for k in PROMPT_LEARNING)


@pytest.mark.parametrize("key", ["lora", "dora", "ln_tuning"])  # (LayerNorm tuning swaps whole modules in)
def test_a_bf16_base_merges_in_its_own_dtype_to_what_float32_arithmetic_gives(key, tiny_model_dir, tmp_path):
    """The merge loaded the base in float32 (twice a bf16 model's memory): PEFT works each change out in
    float32 itself, so the base in its own dtype gives the same merged weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipelines.export.merge import copy_tokenizer

    base = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    copy_tokenizer(tiny_model_dir, base)
    make_adapter(key, base, tmp_path / "adapter")
    summary = merge_adapter(str(base), tmp_path / "adapter", tmp_path / "merged")
    assert summary["dtype"] == "bfloat16"
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.bfloat16).state_dict()
    wide = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    expected = PeftModel.from_pretrained(wide, str(tmp_path / "adapter")).merge_and_unload().to(torch.bfloat16)
    expected = expected.state_dict()
    assert merged.keys() == expected.keys() and all(merged[k].dtype == torch.bfloat16 for k in merged)
    stored = weights(base)
    assert [k for k in stored if not torch.equal(merged[k], stored[k])]  # the adapter moved weights
    assert all(torch.equal(merged[k], expected[k]) for k in merged), [k for k in merged
                                                                      if not torch.equal(merged[k], expected[k])]


CANCEL_MERGE = """
import sys
from pathlib import Path
from pipelines.export import Cancelled
from pipelines.export.merge import merge_adapter

said = []
try:
    merge_adapter(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), on_progress=said.append,
                  cancelled=lambda: said[-1:] == [sys.argv[4]])
    print("merged")
except Cancelled:
    print("cancelled at", said[-1])
"""


@pytest.mark.parametrize("phase", ["merging the adapter into the weights", "writing the merged model"])
def test_a_cancel_stops_an_adapter_merge_in_any_step_and_leaves_nothing(phase, tiny_model_dir, tmp_path):
    """A cancel was not looked at until the merged model was loaded, merged, written and synced to disk
    (minutes on a big model), while the Export tab said it stopped."""
    make_adapter("lora", tiny_model_dir, tmp_path / "adapter")
    out = tmp_path / "out"
    out.mkdir()
    done = python(CANCEL_MERGE, tiny_model_dir, tmp_path / "adapter", out / "merged", phase)
    assert done.stdout.strip() == f"cancelled at {phase}", done.stderr[-2000:]
    assert list(out.iterdir()) == []  # neither the model nor its temporary folder
