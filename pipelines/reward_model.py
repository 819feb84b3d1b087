"""A studio reward model, loaded to score replies: the base as a sequence-classification model, the
run's LoRA adapter and score head on it. A score is one number for a whole conversation (prompt and
reply), read at its last token, tokenized exactly as TRL's RewardTrainer tokenized the training
pairs (the chat template, with nothing added), so scores mean what training taught."""

from __future__ import annotations

import contextlib
from pathlib import Path

from pipelines import models

SCORE_BATCH = 8  # replies scored in one forward pass


@contextlib.contextmanager
def new_score_head():
    """Loading a language model as a scorer: its score head is new by design (trained by the reward
    model run, or read from its adapter), so transformers' load report ("score.weight MISSING ...
    newly initialized", in terminal colours) would only alarm the person reading the log."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load(base_path: str, adapter_dir: Path | str):
    """(model, tokenizer) in eval mode: on the GPU where there is one (in bf16, as chat's models; it
    scored every GRPO and PPO reply on the CPU beside an idle GPU), else on the CPU in fp32."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from pipelines import hardware

    tokenizer = models.load_tokenizer(str(adapter_dir))
    dtype = "float32"
    if hardware.has_cuda():
        import torch

        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else "float32"
    with new_score_head():
        model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=dtype,
                                                                   use_safetensors=True, trust_remote_code=False)
    model.config.pad_token_id = tokenizer.pad_token_id
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    return (model.to("cuda") if hardware.has_cuda() else model).eval(), tokenizer


def score(model, tokenizer, conversations: list[list[dict]], batch_size: int = SCORE_BATCH) -> list[float]:
    """One score per conversation (a prompt's messages followed by the assistant's reply)."""
    import torch

    ids = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in conversations]
    out = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(map(len, chunk))
        # right padding: the model reads the score at the last non-pad token of each row
        input_ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in chunk])
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in chunk])
        with torch.no_grad():
            logits = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device)).logits
        out += logits[:, 0].float().tolist()
    return out
