"""The one place a method parameter is declared: default, range or choices, help, advanced.

The UI form, the YAML/CLI config, validation and the call into TRL/PEFT all read these
declarations, so a parameter is written exactly once.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

# Where a parameter goes: TRL's trainer config, PEFT's adapter config, transformers'
# BitsAndBytesConfig (QLoRA), or the studio itself (for concepts none of them has, such as the
# held-out fraction), or the trainer's `optim_args` string (a low-rank optimizer's rank, ...).
Target = Literal["trainer", "peft", "quantization", "studio", "optim_args"]


class ConfigError(ValueError):
    """A parameter value a user gave that cannot be used; the message is one sentence."""

    one_sentence = True  # a job that fails with it shows the message alone (pipelines/run.py)


def param(
    default: Any,
    *,
    label: str,
    help: str,
    target: Target,
    min: float | None = None,
    max: float | None = None,
    choices: list[Any] | None = None,
    step: float | None = None,
    advanced: bool = False,
    choice_help: dict[Any, str] | None = None,
    after: str | None = None,
) -> Any:
    """Declare one method parameter as a dataclass field carrying its UI/validation metadata.

    `choice_help` explains each choice in a line of its own (shown in the dropdown). `after`: the field
    it is shown after (a field declared in a mix-in, which dataclasses put where the mix-in comes)."""
    meta = {
        "label": label,
        "help": help,
        "target": target,
        "min": min,
        "max": max,
        "choices": choices,
        "step": step,
        "advanced": advanced,
        "choice_help": choice_help,
        "after": after,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    name: str
    type: type
    default: Any
    label: str
    help: str
    target: Target
    min: float | None
    max: float | None
    choices: list[Any] | None
    step: float | None
    advanced: bool
    choice_help: dict[Any, str] | None = None
    after: str | None = None


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def describe(params_cls: type) -> list[ParamInfo]:
    """The declared parameters of a method, in declaration order (a field declared `after` another
    moved behind it)."""
    out = []
    for f in dataclasses.fields(params_cls):
        typ = f.type if isinstance(f.type, type) else _TYPES[str(f.type)]
        out.append(ParamInfo(name=f.name, type=typ, default=f.default, **f.metadata))
    for info in [info for info in out if info.after]:
        if info.after != info.name and info.after in [other.name for other in out]:
            out.remove(info)
            out.insert([other.name for other in out].index(info.after) + 1, info)
    return out


def _coerce(info: ParamInfo, value: Any) -> Any:
    name = info.name
    if info.type is not str and (value is None or isinstance(value, str) and not value.strip()):
        # a field cleared in the form, or a key with no value in a config file
        kind = {bool: "true or false", int: "a whole number"}.get(info.type, "a number")
        raise ConfigError(f"parameter '{name}': is empty; give {kind} (the default is {info.default!r})")
    if info.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
            return value.lower() in ("true", "yes")
        raise ConfigError(f"parameter '{name}': expected true or false, got {value!r}")
    if info.type is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"parameter '{name}': expected a whole number, got {value!r}")
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"parameter '{name}': expected a whole number, got {value!r}") from None
        if not math.isfinite(number) or number != int(number):
            raise ConfigError(f"parameter '{name}': expected a whole number, got {value!r}")
        return int(number)
    if info.type is float:
        if isinstance(value, bool):
            raise ConfigError(f"parameter '{name}': expected a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"parameter '{name}': expected a number, got {value!r}") from None
        if not math.isfinite(number):  # YAML's .inf and .nan: no setting means "infinitely"
            raise ConfigError(f"parameter '{name}': expected a finite number, got {value!r}")
        return number
    return str(value)


def check(info: ParamInfo, value: Any) -> Any:
    """Coerce one value to the declared type and check it against the range or choices."""
    value = _coerce(info, value)
    if info.choices is not None and value not in info.choices:
        allowed = ", ".join(str(c) for c in info.choices)
        raise ConfigError(f"parameter '{info.name}': expected one of {allowed}, got {value!r}")
    if info.min is not None and value < info.min or info.max is not None and value > info.max:
        raise ConfigError(
            f"parameter '{info.name}': expected a value from {info.min} to {info.max}, got {value!r}"
        )
    return value


def did_you_mean(name: str, options) -> str:
    """' (did you mean 'learning_rate'?)' for a name one typo away from an option, else ''."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


# Settings some methods no longer offer because they never did anything there, dropped from stored runs' params
# (a resume or a Continue of a DPO run saved with LoRA's Dropout would be refused as an unknown parameter):
# LoRA's Dropout for the preference, reward-model and RL methods (pipelines/methods/lora.py). (GRPO's and RLOO's
# clip, retired while they learned from each batch of replies once, is offered again with their passes.)
RETIRED = {"lora_dropout"}


def parse(params_cls: type, values: dict[str, Any] | None) -> Any:
    """Build a validated params instance from user values (missing ones take their default)."""
    infos = {i.name: i for i in describe(params_cls)}
    values = {k: v for k, v in (values or {}).items() if k in infos or k not in RETIRED}
    unknown = sorted(set(values) - set(infos))
    if unknown:
        raise ConfigError(
            f"unknown parameter '{unknown[0]}'{did_you_mean(unknown[0], infos)}; this method accepts: "
            f"{', '.join(infos)}"
        )
    checked, problems = {}, []
    for key, value in values.items():  # every field that is wrong, in one line (a form with two named one, then
        try:  # the other only once the first was fixed and Start pressed again)
            checked[key] = check(infos[key], value)
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("; ".join(problems))
    return params_cls(**checked)


def split_by_target(params: Any) -> dict[str, dict[str, Any]]:
    """Group a params instance's values by where they go: trainer, peft, quantization or studio."""
    out: dict[str, dict[str, Any]] = {"trainer": {}, "peft": {}, "quantization": {}, "studio": {},
                                      "optim_args": {}}
    for info in describe(type(params)):
        out[info.target][info.name] = getattr(params, info.name)
    return out


def _meta(field: dataclasses.Field, helps: dict[str, str] | None) -> dict:
    """A field's declaration, its help replaced where `helps` says it in the method's own terms."""
    return {**field.metadata, "help": helps[field.name]} if helps and field.name in helps else field.metadata


def with_defaults(params_cls: type, name: str, helps: dict[str, str] | None = None, **defaults: Any) -> type:
    """The same declaration with other defaults (ranges and order unchanged; help too, unless `helps` words a
    field for the method: the shared Epochs said "repeats your examples word for word" to a reward model).

    Lets a method keep the shared training fields but start from values that suit it, e.g.
    LoRA's higher learning rate, without writing those fields a second time."""
    by_name = {f.name: f for f in dataclasses.fields(params_cls)}
    missing = sorted((set(defaults) | set(helps or {})) - set(by_name))
    if missing:
        raise TypeError(f"{params_cls.__name__} has no parameter {missing[0]!r}")
    fields = [
        (key, by_name[key].type,
         dataclasses.field(default=defaults.get(key, by_name[key].default), metadata=_meta(by_name[key], helps)))
        for key in dict.fromkeys([*defaults, *(helps or {})])
    ]
    return dataclasses.make_dataclass(name, fields, bases=(params_cls,))


def only(params_cls: type, name: str, keep: list[str], helps: dict[str, str] | None = None, **defaults: Any) -> type:
    """A declaration with just some of another's fields (ranges and order unchanged; help too, unless `helps`
    words a field for the method), and optionally other defaults: for methods where some shared settings mean
    nothing (reinforcement learning has no 'longest example', its held-out check has no loss to stop early on)."""
    by_name = {f.name: f for f in dataclasses.fields(params_cls)}
    missing = sorted((set(keep) | set(defaults) | set(helps or {})) - set(by_name))
    if missing:
        raise TypeError(f"{params_cls.__name__} has no parameter {missing[0]!r}")
    fields = [
        (key, by_name[key].type,
         dataclasses.field(default=defaults.get(key, by_name[key].default), metadata=_meta(by_name[key], helps)))
        for key in by_name if key in keep
    ]
    return dataclasses.make_dataclass(name, fields)
