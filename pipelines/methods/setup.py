"""What a method's hooks may need to know about the run they are building for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setup:
    model_path: str = ""  # the folder the base model and its tokenizer load from
    total_steps: int = 1000  # optimizer steps the run will take (AdaLoRA's rank schedule needs it)
    num_layers: int = 0  # blocks of the model being built, where not the saved model's (the estimate's probe)
