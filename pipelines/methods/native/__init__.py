"""Our own adapters (bottleneck adapters, ReFT, MAM, UniPELT) as PEFT tuners, so they save, reload, switch on and
off in the Chat tab and continue into preference training exactly like LoRA does.

PEFT 0.21 lets a project add a tuner with `register_peft_method`, but only for names already in
its `PeftType` enum; `register` adds the member first. Everything else is PEFT's public tuner API
(`BaseTuner`, `BaseTunerLayer`). Any code that loads one of these adapters (the studio, or a user's
script) imports `pipelines.methods.native` and calls `register()` first."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False


def _add_peft_type(name: str):
    """A new member of PEFT's `PeftType` (a str enum) with value and name `name`."""
    from peft.utils.peft_types import PeftType

    if name in PeftType._value2member_map_:
        return PeftType._value2member_map_[name]
    member = str.__new__(PeftType, name)
    member._name_ = member._value_ = name
    member.__objclass__ = PeftType
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    try:  # Python 3.12+ keeps members as class attributes too
        type.__setattr__(PeftType, name, member)
    except (AttributeError, TypeError):
        pass
    return member


TUNERS = ("bottleneck", "reft", "mam", "unipelt")  # PEFT type names (upper case in an adapter's config)


def register() -> None:
    """Make PEFT know the studio's own tuners (idempotent, thread-safe)."""
    global _done
    with _lock:
        if _done:
            return
        from peft.utils import register_peft_method

        from pipelines.methods.native import bottleneck, mam, reft, unipelt

        classes = {"bottleneck": (bottleneck.BottleneckConfig, bottleneck.BottleneckModel),
                   "reft": (reft.ReftConfig, reft.ReftModel), "mam": (mam.MamConfig, mam.MamModel),
                   "unipelt": (unipelt.UniPeltConfig, unipelt.UniPeltModel)}
        for name in TUNERS:
            config_cls, model_cls = classes[name]
            _add_peft_type(name.upper())
            register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls)
        _done = True


def peft_type(name: str):
    """The PeftType member for one of our tuners, added if it is not there yet."""
    return _add_peft_type(name)
