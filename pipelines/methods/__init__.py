"""The method catalogue: one explicit `METHODS` dict, one declaration per method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from pipelines.methods.lora import LoraParams, lora_config
from pipelines.methods.params import ConfigError, describe, parse, split_by_target


@dataclass(frozen=True)
class Method:
    key: str
    label: str
    family: str
    data_kind: str  # "sft", "preference", "kto", "text"
    summary: str
    when_to_use: str
    mergeable: bool
    params: type
    # params -> PEFT config (None = the whole model trains)
    peft_config: Callable[[Any], Any] | None
    runner: str  # module in pipelines/ whose train(job, run_dir) runs this method


METHODS: dict[str, Method] = {
    "lora": Method(
        key="lora",
        label="LoRA",
        family="LoRA",
        data_kind="sft",
        summary="Freezes the model and learns a small low-rank 'patch' for its layers. "
        "Fast, light on memory, and the result is a small file you can switch on and off.",
        when_to_use="The default choice for teaching a model new facts, a style or a format.",
        mergeable=True,
        params=LoraParams,
        peft_config=lora_config,
        runner="pipelines.train_sft",
    ),
}


def get_method(key: str) -> Method:
    if key not in METHODS:
        raise ConfigError(f"unknown method '{key}'; available methods: {', '.join(METHODS)}")
    return METHODS[key]


__all__ = ["METHODS", "Method", "ConfigError", "describe", "get_method", "parse", "split_by_target"]
