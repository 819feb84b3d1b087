"""A method's parameter declaration turned into Gradio widgets (help right beside each field).

The Train form is one set of fields shared by every method: one widget per parameter name (and
place: basic or under *Advanced settings*; and list of choices), shown when the chosen method has it
and relabelled to that method's declaration. One copy of each field per method made the page ~1,300 components,
and a browser on two cores took ~8 s to open it and a second for each click (the page matches
every component against every event when it loads)."""

from __future__ import annotations

import gradio as gr

from pipelines.methods import describe


def _choices(info) -> list[tuple[str, object]]:
    explained = info.choice_help or {}
    return [(f"{c} — {explained[c]}" if c in explained else str(c), c) for c in info.choices]


def _kind(info) -> str:
    if info.choices is not None:
        return "choice"
    return {bool: "checkbox", int: "whole number", float: "number"}.get(info.type, "text")


def widget(info, prefix: str = "param-", **extra):
    label = info.label
    if info.choices is not None:
        return gr.Dropdown(choices=_choices(info), value=info.default, label=label, info=info.help,
                           elem_id=f"{prefix}{info.name}", **extra)
    if info.type is bool:
        return gr.Checkbox(value=info.default, label=label, info=info.help, elem_id=f"{prefix}{info.name}", **extra)
    if info.type in (int, float):
        # no minimum/maximum here: Gradio's own refusal ("Value 0 is less than minimum value 0.1")
        # does not say which field; the declaration's check does, when Start is pressed
        return gr.Number(
            value=info.default, label=label, info=info.help,
            step=info.step or (1 if info.type is int else None), precision=0 if info.type is int else None,
            elem_id=f"{prefix}{info.name}", **extra,
        )
    return gr.Textbox(value=str(info.default), label=label, info=info.help, elem_id=f"{prefix}{info.name}", **extra)


def preprocessed(widgets: list, raw: list) -> list:
    """The values as Gradio passes them to a function, from what the page sent (for an event with
    preprocess=False): numbers rounded to their precision. A value a widget refuses stays as sent (a
    dropdown whose list was just replaced can still send the value from before)."""
    out = []
    for w, value in zip(widgets, raw):
        try:
            out.append(w.preprocess(value))
        except Exception:  # noqa: BLE001 - Gradio raises its own Error or a plain one, per component
            out.append(value)
    return out


def slot_of(info) -> tuple:
    """Which shared field a parameter uses: one per name, place (basic or advanced) and list of
    choices. A dropdown whose choices changed with the method let the page send one method's choice
    against another's list (GRPO's and KTO's loss types), which Gradio refuses."""
    return info.name, info.advanced, tuple(_choices(info)) if info.choices is not None else None


def _declared(spec) -> list:
    infos = describe(spec.params)
    return [i for i in infos if not i.advanced] + [i for i in infos if i.advanced]


def field_order(methods: dict) -> list[tuple]:
    """Every slot, in an order that keeps each method's own order of its fields (basic ones first): a
    topological order of all methods' sequences, earliest-declared first."""
    before: dict[tuple, set] = {}
    for spec in methods.values():
        seq = [slot_of(i) for i in _declared(spec)]
        for i, slot in enumerate(seq):
            before.setdefault(slot, set()).update(seq[:i])
    first = list(before)  # dicts keep insertion order: first declaration first
    order: list[tuple] = []
    while len(order) < len(first):
        placed = set(order)
        ready = [s for s in first if s not in placed and before[s] <= placed]
        if not ready:
            raise ValueError("methods declare shared parameters in conflicting orders: "
                             + ", ".join(s[0] for s in first if s not in placed))
        order.append(ready[0])
    return order


class MethodForm:
    """The shared fields; `by_method[key]` maps each of a method's parameter names to its widget."""

    def __init__(self, methods: dict):
        self.infos = {key: {i.name: i for i in describe(spec.params)} for key, spec in methods.items()}
        self.slots = field_order(methods)
        first_info = {}
        for key, infos in self.infos.items():
            for info in infos.values():
                seen = first_info.setdefault(slot_of(info), info)
                if _kind(seen) != _kind(info):  # one widget cannot be a number for one method, a choice for another
                    raise ValueError(f"parameter '{info.name}' of method '{key}' is a {_kind(info)}; another "
                                     f"method's parameter of that name is a {_kind(seen)}: rename one")
        shown = "lora" if "lora" in methods else next(iter(methods))
        self.widgets: dict[tuple, gr.components.Component] = {}
        with gr.Group():
            for slot in (s for s in self.slots if not s[1]):
                self.widgets[slot] = self._make(slot, shown, first_info[slot])
            with gr.Accordion("Advanced settings", open=False) as self.advanced:
                for slot in (s for s in self.slots if s[1]):
                    self.widgets[slot] = self._make(slot, shown, first_info[slot])
        self.components = list(self.widgets.values())
        self.by_method = {key: {name: self.widgets[slot_of(info)] for name, info in infos.items()}
                          for key, infos in self.infos.items()}

    def _make(self, slot, shown, fallback):
        """The field as the first-shown method declares it, else hidden until a method that has it."""
        info = self.infos[shown].get(slot[0])
        visible = info is not None and slot_of(info) == slot
        return widget(info if visible else fallback, visible=visible)

    def defaults(self, key: str) -> dict:
        return {name: info.default for name, info in self.infos[key].items()}

    def values(self, key: str, values: list) -> dict:
        """The method's own settings from the values of every field (in `components` order)."""
        by_widget = dict(zip(map(id, self.components), values))
        return {name: by_widget[id(w)] for name, w in self.by_method[key].items()}

    def updates(self, key: str, values: dict) -> list:
        """Every field shown or hidden for the method, its shown ones set to `values` (the method's
        defaults where missing) and labelled as the method declares them; then the Advanced section."""
        mine = {id(w): self.infos[key][name] for name, w in self.by_method[key].items()}
        out = []
        for w in self.components:
            info = mine.get(id(w))
            if info is None:
                out.append(gr.update(visible=False))
                continue
            value = values.get(info.name, info.default)
            if value is None:
                value = info.default
            extra = {"step": info.step or (1 if info.type is int else None)} if info.type in (int, float) else {}
            out.append(gr.update(visible=True, value=str(value) if isinstance(w, gr.Textbox) else value,
                                 label=info.label, info=info.help, **extra))
        return [*out, gr.update(visible=any(info.advanced for info in self.infos[key].values()))]

    @property
    def outputs(self) -> list:
        """What `updates` sets, in its order."""
        return [*self.components, self.advanced]
