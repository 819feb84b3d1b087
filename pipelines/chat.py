"""Chat serving: a model cache in which one copy of a base model serves the base itself and every
adapter trained on it, and a decoding loop that streams several sides at the same time.

Each side decodes one token per step with its own KV cache; a step takes the base's lock, turns
the side's adapter on (or all adapters off for the base side), runs one forward pass and lets
go. Steps of different sides — or different browsers — interleave safely on the one copy, and
each side computes exactly what a separate model would.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
import weakref
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipelines import models
from pipelines.generation import stop_ids

DEFAULT_CACHE_BYTES = 8 * 10**9


@dataclass
class GenerationSettings:
    system_prompt: str = ""
    temperature: float = 0.7  # 0 = always the most likely next token (greedy)
    top_p: float = 0.9
    max_new_tokens: int = 256
    repetition_penalty: float = 1.1
    seed: int = -1  # -1 = a new random seed each time

    def repeats(self) -> bool:
        """Whether a prompt asked again gets the same reply word for word (greedy, or a fixed seed)."""
        return self.temperature <= 0 or self.seed >= 0

    def resolved_seed(self) -> int:
        return self.seed if self.seed >= 0 else int.from_bytes(hashlib.sha256(str(time.time_ns()).encode())
                                                                .digest()[:4], "big")


@dataclass
class LoadedBase:
    """One base model in memory, with the adapters loaded onto it so far."""
    path: str
    model: object
    tokenizer: object
    bytes: int
    adapters: dict[str, str] = field(default_factory=dict)  # adapter name -> folder
    tuner_layers: list | None = None  # PEFT's adapter layers, found once per set of adapters
    kind: str | None = None  # the kind of adapter this copy holds (see ModelCache._key), claimed when chosen
    lock: threading.RLock = field(default_factory=threading.RLock)
    key: str = ""  # its place in the cache
    ready: threading.Event = field(default_factory=threading.Event)  # set once loaded (or failed to)
    failed: BaseException | None = None


def _nbytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def adapter_name(adapter_dir: Path | str) -> str:
    return "a" + hashlib.sha1(str(Path(adapter_dir).resolve()).encode()).hexdigest()[:12]


PROMPT_LEARNING = {"PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING"}


def adapter_kind(adapter_dir: Path | str) -> str:
    """PEFT's name for the adapter's type: LORA, IA3, BOTTLENECK, ..."""
    import json

    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("peft_type", "")


def is_prompt_learning(adapter_dir: Path | str) -> bool:
    return adapter_kind(adapter_dir) in PROMPT_LEARNING


def sharing_kind(adapter_dir: Path | str) -> str:
    """Adapters of one sharing kind can live on one PEFT model: one PEFT type, and for bottleneck
    adapters one placement (a parallel adapter wraps the whole feed-forward block, inside which a
    serial one would wrap its output layer)."""
    import json

    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    kind = config.get("peft_type", "")
    return f"{kind}:{config.get('placement')}" if kind == "BOTTLENECK" else kind


class ModelCache:
    """Base models by path, least recently used evicted first once `limit_bytes` is passed."""

    def __init__(self, cache_dir: Path, limit_bytes: int = DEFAULT_CACHE_BYTES):
        self.cache_dir = Path(cache_dir)
        self.limit_bytes = limit_bytes
        self._entries: OrderedDict[str, LoadedBase] = OrderedDict()
        # copies let go of while a reply still used them (another page's request trimmed the cache): taken
        # back while alive, not loaded a second time beside themselves
        self._out: weakref.WeakValueDictionary[str, LoadedBase] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        return list(self._entries)

    def used_bytes(self) -> int:
        return sum(e.bytes for e in self._entries.values())

    def get(self, model_spec: str, adapter_dir: Path | str | None = None,
            trim: bool = True) -> tuple[LoadedBase, str | None]:
        """The loaded base for this model and the adapter's name on it (None: the base itself). `trim` False:
        the cache is not trimmed to its budget now; a request for several copies (the sides of a comparison)
        calls `trim` with them all once it has them (with two models over the budget each side threw out
        the other's, and every message loaded both again).

        A model is loaded outside the cache's lock (a request for another model, one in memory, waited for
        the whole load); a second request for the one being loaded waits for that load."""
        path = str(models.resolve(model_spec, self.cache_dir))
        with self._lock:
            key, kind = self._key(path, adapter_dir)
            entry = self._entries.get(key) or self._out.pop(key, None)
            loads = entry is None
            if loads:
                entry = LoadedBase(path, None, None, 0, key=key)
            self._entries[key] = entry
            if kind is not None and entry.kind is None:
                entry.kind = kind  # claimed under the lock: a request of another kind now takes its own copy
            self._entries.move_to_end(key)
        if loads:
            try:
                entry.model = models.load_for_inference(path)  # on the GPU when there is one
                entry.tokenizer, entry.bytes = models.load_tokenizer(path), _nbytes(entry.model)
            except BaseException as err:
                entry.failed = err
                with self._lock:
                    if self._entries.get(key) is entry:
                        del self._entries[key]  # (the next request tries again)
                raise
            finally:
                entry.ready.set()
        else:
            entry.ready.wait()
            if entry.failed is not None:  # the load this request waited for failed: its error, a copy per thread
                failed = copy.copy(entry.failed)
                raise failed.with_traceback(None) from entry.failed
        if trim:
            self.trim([entry])
        if adapter_dir is None:
            return entry, None
        name = adapter_name(adapter_dir)
        with entry.lock:
            if name not in entry.adapters:
                try:
                    self._load_adapter(entry, name, Path(adapter_dir))
                except Exception:
                    if not entry.adapters:
                        entry.kind = None  # the copy holds no adapter after all: any kind may claim it
                    raise
                with self._lock:  # (claimed again: another request's failed load may have let go of the claim)
                    if entry.kind is None:
                        entry.kind = kind
        return entry, name

    def _key(self, path: str, adapter_dir) -> tuple[str, str | None]:
        """(which loaded copy of the base serves this adapter, its sharing kind). PEFT holds adapters
        of one type per model: the base's own copy takes the first kind loaded on it (and serves the
        base itself, with adapters off); other kinds get a copy of their own per kind, and a
        prompt-learning adapter (prefix, prompt, P-tuning) one per adapter."""
        if adapter_dir is None:
            return path, None
        kind = sharing_kind(adapter_dir)
        if kind in PROMPT_LEARNING:
            return f"{path}#{adapter_name(adapter_dir)}", kind
        plain = self._entries.get(path) or self._out.get(path)  # (a copy let go of but still in use counts)
        held = plain.kind if plain is not None else None
        return (path if held in (None, kind) else f"{path}#{kind}"), kind

    def _load_adapter(self, entry: LoadedBase, name: str, adapter_dir: Path) -> None:
        from peft import PeftModel

        from pipelines.methods.native import register

        register()  # the studio's own adapter types (bottleneck, ReFT, MAM, UniPELT)

        before = _nbytes(entry.model)
        if isinstance(entry.model, PeftModel):
            entry.model.load_adapter(str(adapter_dir), adapter_name=name)
        else:
            entry.model = PeftModel.from_pretrained(entry.model, str(adapter_dir), adapter_name=name)
        entry.model.eval()
        entry.adapters[name] = str(adapter_dir)
        entry.tuner_layers = None
        entry.bytes += _nbytes(entry.model) - before

    def release(self) -> int:
        """Drop every loaded copy (not one still loading); a reply being written keeps its own until it ends.
        The number dropped."""
        with self._lock:
            gone = [k for k, e in self._entries.items() if e.ready.is_set()]
            for key in gone:
                self._out[key] = self._entries.pop(key)
        return len(gone)

    def trim(self, keep: list[LoadedBase]) -> None:
        """Least recently used first, until the loaded copies fit the budget; never one in `keep` (the ones
        a request uses now) or one still loading: over the budget with only those left, they stay."""
        with self._lock:
            kept = {e.key for e in keep}
            while self.used_bytes() > self.limit_bytes:
                oldest = next((k for k, e in self._entries.items() if k not in kept and e.ready.is_set()), None)
                if oldest is None:
                    return
                self._out[oldest] = self._entries.pop(oldest)


@contextmanager
def _active(entry: LoadedBase, adapter: str | None):
    """Only this side's adapter is on for the duration of one step.

    PEFT's own switches (`disable_adapter()`, `set_adapter()`) walk every module and reset
    gradient flags: 15-50 ms each on the default model, more than a whole decoding step. For
    adapters made of tuner layers (LoRA and its family, IA3, ...) the studio flips the two
    attributes those layers read in forward instead; prompt-learning adapters take PEFT's path."""
    from peft import PeftModel

    model = entry.model
    if not isinstance(model, PeftModel):
        yield
        return
    if model.active_peft_config.is_prompt_learning:
        if adapter is None:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(adapter)
            yield
        return
    if entry.tuner_layers is None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        entry.tuner_layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in entry.tuner_layers:
        layer._disable_adapters = adapter is None
        if adapter is not None:
            layer._active_adapter = [adapter]
    yield


class TooLong(ValueError):
    """A prompt longer than the model reads at once; one sentence."""
    one_sentence = True


def context_window(entry: LoadedBase, adapter: str | None) -> int | None:
    """The most positions a reply on this side may fill, prompt and reply together (None: not said). A
    prompt-learning adapter's virtual tokens take positions of their own."""
    config = getattr(entry.model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(config, "max_position_embeddings", None)
    if not isinstance(window, int) or window <= 0:
        return None
    peft_config = getattr(entry.model, "peft_config", {}).get(adapter) if adapter is not None else None
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        window -= peft_config.num_virtual_tokens or 0
    return window


class Decoder:
    """One side's reply, produced one token per `step()` with its own KV cache.

    A conversation longer than the model reads at once (its context window, prompt and reply together)
    loses its oldest exchanges until the prompt leaves room for a reply: `max_new_tokens`, or a quarter
    of the window when that is less (a reply limit as long as the window emptied every conversation).
    `dropped` says how many messages went; the system prompt and the last question stay. A reply that
    then fills the window stops there (`out_of_room`). Past the window a model with rotary positions
    wrote nonsense without a word, and one with a table of positions stopped with IndexError."""

    def __init__(self, entry: LoadedBase, adapter: str | None, messages: list[dict],
                 settings: GenerationSettings):
        import torch
        from transformers import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopPLogitsWarper,
        )

        self.entry, self.adapter, self.settings = entry, adapter, settings
        tok = entry.tokenizer
        if settings.system_prompt.strip() and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": settings.system_prompt.strip()}, *messages]
        self.context, self.dropped, self.out_of_room = context_window(entry, adapter), 0, False
        self.prompt_ids = self._encode(messages)
        head = int(bool(messages) and messages[0]["role"] == "system")
        self.read = len(messages) - head  # the conversation's messages the model reads (the system prompt apart)
        if self.context is not None:
            messages, room = list(messages), min(settings.max_new_tokens, self.context // 4)
            while self.prompt_ids.shape[1] + room > self.context and len(messages) - head > 1:
                # the oldest exchange: a question and the reply to it (the history keeps taking turns)
                n = 2 if len(messages) - head > 2 and messages[head + 1]["role"] == "assistant" else 1
                del messages[head:head + n]
                self.dropped, self.read = self.dropped + n, self.read - n
                self.prompt_ids = self._encode(messages)
            if self.prompt_ids.shape[1] >= self.context:
                raise TooLong(f"the prompt is {self.prompt_ids.shape[1]:,} tokens (with the chat template"
                              + (" and the system prompt" if head else "") + f"), and this model reads at most "
                              f"{self.context:,} at once, prompt and reply together; shorten it")
        self.generated: list[int] = []
        self.cache = None
        self.done = False
        self.sampling = settings.temperature > 0
        processors = []
        if settings.repetition_penalty and settings.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
        if self.sampling:
            processors.append(TemperatureLogitsWarper(settings.temperature))
            if settings.top_p < 1.0:
                processors.append(TopPLogitsWarper(settings.top_p))
        self.processors = LogitsProcessorList(processors)
        self.generator = torch.Generator().manual_seed(settings.resolved_seed()) if self.sampling else None
        self.stop_ids = set(stop_ids(entry.model, tok))

    def _encode(self, messages: list[dict]):
        return self.entry.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                        return_dict=True)["input_ids"]

    def step(self) -> None:
        import torch

        if self.done:
            return
        model = self.entry.model
        if self.cache is None:
            ids = self.prompt_ids
        else:
            ids = torch.tensor([[self.generated[-1]]])
        ids = ids.to(model.device)
        with self.entry.lock, torch.inference_mode(), _active(self.entry, self.adapter):
            if self.cache is not None and self.adapter is not None and model.active_peft_config.is_prompt_learning:
                # the virtual tokens (or prefix) went into the cache on the first step; PEFT's
                # forward would put them in front again, so later steps skip its wrapper
                model = model.get_base_model()
            out, self.cache = models.forward_with_cache(model, self.cache, input_ids=ids)
            # the choice of the next token happens on the CPU (its random generator, its penalties)
            logits = out.logits[:, -1, :].float().cpu()
            if len(self.processors):
                seen = torch.cat([self.prompt_ids, torch.tensor([self.generated], dtype=torch.long)], dim=1) \
                    if self.generated else self.prompt_ids
                logits = self.processors(seen, logits)
            if self.sampling:
                token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=self.generator))
            else:
                token = int(logits.argmax(dim=-1))
        if token in self.stop_ids:
            self.done = True
            return
        self.generated.append(token)
        if len(self.generated) >= self.settings.max_new_tokens:
            self.done = True
        elif self.context is not None and self.prompt_ids.shape[1] + len(self.generated) > self.context:
            # the window is full: the last token would be read at a position past its end (positions 0 to
            # context - 1; the newest token is only read to write the next)
            self.done = self.out_of_room = True

    @property
    def cut_off(self) -> bool:
        """Stopped by the max_new_tokens limit or a full context window, not by the model's end of reply."""
        return self.done and (len(self.generated) >= self.settings.max_new_tokens or self.out_of_room)

    def text(self) -> str:
        text = self.entry.tokenizer.decode(self.generated, skip_special_tokens=True)
        return text.rstrip("\ufffd")  # half of a multi-byte character: wait for the rest


def stream(decoders: list[Decoder]):
    """Advance every side in turn, yielding all sides' text after each token of any side."""
    while not all(d.done for d in decoders):
        for d in decoders:
            if not d.done:
                d.step()
                yield [x.text() for x in decoders]
    yield [x.text().strip() for x in decoders]
