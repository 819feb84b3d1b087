"""Replies from a base model, or from the base with a run's adapter on top."""

from __future__ import annotations

from pathlib import Path

from pipelines import models


def load_for_chat(model_spec: str, cache_dir: Path, adapter_dir: Path | None = None):
    """(model, tokenizer) ready for generation; with an adapter when one is given."""
    path = models.resolve(model_spec, cache_dir)
    tokenizer = models.load_tokenizer(path)
    model = models.load_for_inference(path)
    if adapter_dir is not None:
        from peft import PeftModel

        from pipelines.methods.native import register

        register()  # the studio's own adapter types (bottleneck, ReFT, MAM, UniPELT)
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.eval()
    return model, tokenizer


def stop_ids(model, tokenizer) -> list[int]:
    """The ids that end a reply: the model's generation_config eos ids (a chat model's end of turn, often
    several) and the tokenizer's eos, sorted."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = eos if isinstance(eos, list) else [eos] if eos is not None else []
    return sorted(set(eos) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))


def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 128,
          temperature: float = 0.0, seed: int | None = None) -> str:
    """The assistant's next message for a conversation (greedy when temperature is 0)."""
    import torch

    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    sampling = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature}
        if seed is not None:
            torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
        )
    new = out[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new, skip_special_tokens=True).strip()
