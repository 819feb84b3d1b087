"""Every preference method, on the tiny model: training moves the model the right way (preferred
answers gain on rejected ones; KTO's good answers gain on its bad ones), the artifact reloads
outside the studio with the same logits, and the chat decoder talks through it."""

from __future__ import annotations

import json

import pytest
import torch

from pipelines import chat, importer
from pipelines.events import RunEvents
from pipelines.methods import METHODS, parse
from pipelines.train_pref import build_trainer, save
from tests.conftest import ROOT, greedy_tokens

PAIRS = ROOT / "assets" / "samples" / "quillpad_preferences.jsonl"
PREFERENCE = [k for k, m in METHODS.items()
              if m.data_kind in ("preference", "kto") and m.runner == "pipelines.train_pref"]
PROBE = "How long is the Quillpad warranty?"


def tiny_params(key: str) -> dict:
    """The method's defaults with a step big enough to move a random tiny model in a few steps."""
    default = parse(METHODS[key].params, {})
    lr = 1e-3 if METHODS[key].trainable else 5e-3
    return {"learning_rate": lr, "num_train_epochs": 2, "per_device_train_batch_size": 4,
            "max_length": 96, "eval_fraction": 0.0, "save_steps": 1000, "beta": default.beta}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The bundled preference pairs, and the same answers as KTO thumbs up/down."""
    folder = tmp_path_factory.mktemp("pref")
    importer.import_file(PAIRS, folder / "pairs")
    kto = folder / "kto.jsonl"
    with open(kto, "w") as out:
        for line in PAIRS.read_text().splitlines():
            pair = json.loads(line)
            for key, label in (("chosen", True), ("rejected", False)):
                out.write(json.dumps({"prompt": pair["prompt"], "completion": pair[key], "label": label}) + "\n")
    importer.import_file(kto, folder / "kto")
    return {"preference": folder / "pairs" / importer.DATA, "kto": folder / "kto" / importer.DATA}


def answer_logps(model, tokenizer, pairs: list[dict]) -> torch.Tensor:
    """log p(answer | prompt) summed over the answer's tokens, through the chat template."""
    out = []
    model.eval()
    for prompt, answer in pairs:
        turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
        context = tokenizer(tokenizer.apply_chat_template(turns[:1], add_generation_prompt=True, tokenize=False),
                            add_special_tokens=False).input_ids
        ids = torch.tensor([tokenizer(tokenizer.apply_chat_template(turns, tokenize=False),
                                      add_special_tokens=False).input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[0, :-1], -1).gather(1, ids[0, 1:, None])[:, 0]
        out.append(logp[len(context) - 1:].sum())
    model.train()
    return torch.stack(out)


def preference_gap(model, tokenizer) -> float:
    """Mean of log p(chosen) - log p(rejected) over the training pairs: DPO's implicit reward
    margin (up to beta and the reference's constant)."""
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    chosen = answer_logps(model, tokenizer, [(r["prompt"], r["chosen"]) for r in rows])
    rejected = answer_logps(model, tokenizer, [(r["prompt"], r["rejected"]) for r in rows])
    return float((chosen - rejected).mean())


@pytest.mark.parametrize("key", PREFERENCE)
def test_preference_method_learns_saves_reloads_and_generates(key, tmp_path, tiny_model_dir, datasets):
    method = METHODS[key]
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(datasets[method.data_kind])}, "params": tiny_params(key)}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, tokenizer = build_trainer(job, run_dir, RunEvents(run_dir))
    # set as the pair collators need (TRL set it itself and warned in the run's log: "you should set ...")
    assert trainer.args.remove_unused_columns is (method.trl not in ("orpo", "cpo"))
    before = preference_gap(trainer.model, tokenizer)
    trainer.train()
    after = preference_gap(trainer.model, tokenizer)
    # KTO's thumbs up are the chosen answers and its thumbs down the rejected ones: the same gap
    assert after > before + 1.0, f"{key}: log p(chosen) - log p(rejected) {before:.2f} -> {after:.2f}"
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in m for m in logged) or key == "kto", "no reward margin on the curves"

    probe = tokenizer([PROBE], return_tensors="pt")
    # the trained weights as plain fp32 (accelerate wraps forward in bf16 autocast for training)
    from accelerate.utils import extract_model_from_parallel

    plain = extract_model_from_parallel(trainer.model, keep_fp32_wrapper=False).eval()
    with torch.no_grad():
        trained = plain(**probe).logits.float()
    out = save(trainer, tokenizer, run_dir)
    assert out.name == method.artifact
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if method.artifact == "model":
        reloaded = AutoModelForCausalLM.from_pretrained(out)
    else:
        assert not (out / "ref").exists(), "the frozen reference adapter is not part of the result"
        reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    reloaded.eval()
    with torch.no_grad():
        again = reloaded(**probe).logits.float()
    torch.testing.assert_close(again, trained, atol=1e-4, rtol=1e-4)

    cache = chat.ModelCache(tmp_path / "models")
    entry, name = cache.get(str(out), None) if method.artifact == "model" else cache.get(str(tiny_model_dir), out)
    settings = chat.GenerationSettings(temperature=0.0, max_new_tokens=6, repetition_penalty=1.0)
    decoder = chat.Decoder(entry, name, [{"role": "user", "content": PROBE}], settings)
    for _ in chat.stream([decoder]):
        pass
    assert decoder.generated == greedy_tokens(reloaded, decoder.prompt_ids, 6)[:len(decoder.generated)]


def test_kto_heldout_loss_reads_what_training_did(tmp_path, tiny_model_dir, datasets):
    """A share that held out one row gave a held-out loss of exactly 0.500 before and after (the row's
    KL reply was its own): the run holds out two prompts (this set's pairs are two rows of one prompt,
    which stay together), both marks of each, and their loss falls."""
    params = {**tiny_params("kto"), "eval_fraction": 0.04, "eval_steps": 1000}  # 24 rows: 1 held out before
    job = {"method": "kto", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(datasets["kto"])}, "params": params}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    assert sorted(trainer.eval_dataset["label"]) == [False, False, True, True]
    assert len({str(p) for p in trainer.eval_dataset["prompt"]}) == 2
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert before == pytest.approx(0.5)  # the policy is its reference: every reward is 0
    assert after < before - 0.01, f"held-out KTO loss {before:.4f} -> {after:.4f}"


def trained_ia3_parent(model_dir, out):
    """An IA3 adapter whose scales are away from IA3's start (all ones: the base model), as a trained one's are."""
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    parent = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                            IA3Config(task_type="CAUSAL_LM", target_modules=["k_proj", "v_proj", "down_proj"],
                                      feedforward_modules=["down_proj"]))
    for name, param in parent.named_parameters():
        if "ia3_l" in name:
            param.data = 1 + 0.5 * torch.randn_like(param)
    parent.save_pretrained(out)
    return out


@pytest.mark.parametrize("key", ["dpo", "kto"])
def test_from_an_ia3_parent_the_reference_is_the_parent(key, tmp_path, tiny_model_dir, datasets):
    """Started from a finished run's adapter, DPO and KTO measure against that adapter. TRL copied it into
    its frozen reference only for weights named `.default.` (LoRA's); IA3 keeps its scales as
    `ia3_l.default`, so the reference stayed at IA3's start (the base model) and the whole SFT change
    counted as preference: before any step the held-out margin was far from 0. Now the policy starts
    as its reference, as from a LoRA parent: rewards and margin 0, KTO's loss 0.5."""
    trained_ia3_parent(tiny_model_dir, tmp_path / "parent")
    params = {**tiny_params(key), "eval_fraction": 0.25, "eval_steps": 1000}
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(datasets[METHODS[key].data_kind])}, "params": params,
           "init_adapter": str(tmp_path / "parent"), "parent_id": "r-parent"}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    trainer, _ = build_trainer(job, run_dir, RunEvents(run_dir))
    weights = dict(trainer.model.named_parameters())
    scales = [n for n in weights if n.endswith("ia3_l.default")]
    assert scales and all(torch.equal(weights[n], weights[n.removesuffix("default") + "ref"]) for n in scales)
    metrics = trainer.evaluate()
    assert metrics["eval_rewards/margins"] == pytest.approx(0, abs=1e-4)
    if key == "dpo":  # (its loss adds the chosen replies' NLL at the studio's defaults)
        assert metrics["eval_rewards/chosen"] == pytest.approx(0, abs=1e-4)
    else:
        assert metrics["eval_loss"] == pytest.approx(0.5, abs=1e-4)


def test_dpo_with_early_stopping_ends_with_its_best_check(tmp_path, tiny_model_dir, datasets):
    """The preference runs keep their best check too, and report that check's held-out figures."""
    from safetensors.torch import load_file

    from pipelines.events import read_metrics
    from pipelines.train_pref import train

    params = {**tiny_params("dpo"), "learning_rate": 3e-2, "num_train_epochs": 20, "eval_fraction": 0.25,
              "eval_steps": 1, "early_stopping_patience": 1}
    job = {"method": "dpo", "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(datasets["preference"])}, "params": params}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = train(job, run_dir, RunEvents(run_dir))
    checks = {m["step"]: m for m in read_metrics(run_dir) if "eval_loss" in m and m["step"] > 0}
    kept = summary["kept_step"]
    assert checks[kept]["eval_loss"] == min(m["eval_loss"] for m in checks.values())
    assert summary["steps"] == kept + 1
    assert summary["eval_rewards/accuracies_after"] == checks[kept]["eval_rewards/accuracies"]
    saved = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    best = load_file(run_dir / "checkpoints" / f"checkpoint-{kept}" / "adapter_model.safetensors")
    assert all(torch.equal(saved[k], best[k]) for k in saved)


@pytest.mark.parametrize("key,watch,metric", [("dpo", "accuracy", "eval_rewards/accuracies"),
                                              ("kto", "margin", "eval_rewards/margins")])
def test_early_stopping_can_watch_a_preference_figure(tmp_path, tiny_model_dir, datasets, key, watch, metric):
    """Early stopping that watches the pairs ranked right (DPO) or the reward margin (KTO) keeps the first
    check where that figure was highest, and the run says so; on held-out loss it kept another step."""
    from pipelines.events import read_metrics
    from pipelines.train_pref import train

    params = {**tiny_params(key), "learning_rate": 3e-2, "num_train_epochs": 20, "eval_fraction": 0.25,
              "eval_steps": 1, "early_stopping_patience": 2, "early_stopping_on": watch}
    job = {"method": key, "model": str(tiny_model_dir), "model_cache": str(tmp_path / "models"),
           "dataset": {"path": str(datasets[METHODS[key].data_kind])}, "params": params}
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = train(job, run_dir, RunEvents(run_dir))
    checks = [m for m in read_metrics(run_dir) if "eval_loss" in m and m["step"] > 0]
    kept = summary["kept_step"]
    best = max(m[metric] for m in checks)
    assert next(m["step"] for m in checks if m[metric] == best) == kept  # the first check at the highest
    assert summary["steps"] == kept + 2 and summary["stopped_early"]  # two checks without a higher one
    assert (summary["watched"], summary["best"]) == (
        {"accuracy": "share of held-out pairs ranked right", "margin": "held-out reward margin"}[watch], "highest")


def test_what_early_stopping_watches_is_named_per_trainer(capsys):
    """Each choice reads the figure its trainer logs; KTO's margin falls back to the loss, saying why, when
    every held-out reply has one mark (TRL measures a margin only on a batch with both)."""
    from pipelines.callbacks import best_metric
    from pipelines.data import interleave_marks
    from pipelines.train_pref import watched_metric

    assert best_metric("loss", "dpo") == ("eval_loss", False) and best_metric(None, "sft") == ("eval_loss", False)
    assert best_metric("accuracy", "cpo") == ("eval_rewards/accuracies", True)
    assert best_metric("margin", "kto") == ("eval_rewards/margins", True)
    assert best_metric("accuracy", "reward") == ("eval_accuracy", True)
    assert best_metric("margin", "reward") == ("eval_margin", True)

    good = [{"prompt": f"p{i}", "completion": "c", "label": True} for i in range(3)]
    bad = [{"prompt": f"q{i}", "completion": "c", "label": False} for i in range(2)]
    margin = {"early_stopping_on": "margin"}
    assert watched_metric(METHODS["kto"], margin, good + bad, 2) == ("eval_rewards/margins", True)
    assert capsys.readouterr().out == ""
    assert watched_metric(METHODS["kto"], margin, good, 8) == ("eval_loss", False)
    assert capsys.readouterr().out == ("early stopping watches the held-out loss, not the reward margin: every "
                                       "held-out reply is marked good, and a margin needs replies of both marks\n")
    # a batch of one (the unpaired APO loss allows it): no check would read a margin, and the run failed at its first
    assert watched_metric(METHODS["kto"], margin, good + bad, 1) == ("eval_loss", False)
    assert "a batch of one reply never holds both marks" in capsys.readouterr().out
    # held-out rows in file order (all thumbs up first) alternate, so the first batch of two has both marks
    assert [r["prompt"] for r in interleave_marks(good + bad)] == ["p0", "q0", "p1", "q1", "p2"]
    assert interleave_marks(good) == good and interleave_marks([]) == []

    from pipelines.methods import describe
    choices = {key: next((i.choices for i in describe(METHODS[key].params) if i.name == "early_stopping_on"), None)
               for key in ("lora", "dpo", "orpo", "kto", "reward_model")}
    assert choices == {"lora": None, "dpo": ["loss", "accuracy", "margin"], "orpo": ["loss", "accuracy", "margin"],
                       "kto": ["loss", "margin"], "reward_model": ["loss", "accuracy", "margin"]}
