"""Train tab: pick model, data and method, set its parameters, start a run; the runs panel
beside it shows every run live."""

from __future__ import annotations

import gradio as gr

from components import devices_form, form_memory, reward_form, runs_panel
from components.reward_form import RUN_PICKER
from components.forms import MethodForm, preprocessed
from components.text import quoted
from pipelines.data import DataError
from pipelines.methods import METHODS, ConfigError, parse
from pipelines.models import ModelError
from studio import export_service, method_service
from studio.core import KIND_WORDS, SAMPLES, AlreadyStarted, RunError, is_sample

# Settings that change the memory or time a run needs: the estimate is refreshed when they do (epochs:
# the total time it states).
COST_FIELDS = {"num_train_epochs", "per_device_train_batch_size", "max_length", "gradient_checkpointing", "eval_fraction", "r",
               "init_r", "num_virtual_tokens", "freeze_trainable_layers", "target_modules",
               "encoder_hidden_size", "prefix_projection", "bnb_4bit_use_double_quant",
               # reinforcement learning's: the replies written, and the steps learned from each batch of them
               "gradient_accumulation_steps", "num_generations", "max_completion_length", "num_iterations"}

QUICK_SET_UP = "Set up a quick first run:"  # how the quick run's note starts (cleared by another pick)


def dataset_choices(studio, method_key: str = "lora") -> list[tuple[str, str]]:
    """The datasets this method can train on: bundled samples, then imported ones, newest first."""
    kinds = method_service.fitting_kinds(method_key)
    samples = [(f"Sample: {label}", key) for key, (_f, kind, label) in SAMPLES.items() if kind in kinds]
    imported = [(f"{d['name']} ({d['rows']} rows)", d["id"]) for d in studio.store.list_datasets()
                if d["kind"] in kinds and not is_sample(d)]  # a user's file under a sample's name is theirs
    return samples + imported


def after_import(studio, method_key: str, made: str | None):
    """The Train tab's datasets once the Data tab imported one: it is offered, and picked when the method
    chosen trains on its kind (a newcomer who imported their file found Train still on the FAQ sample)."""
    options = dataset_choices(studio, method_key)
    picked = made if made in [value for _label, value in options] else None
    return gr.update(choices=options, value=picked) if picked else gr.update(choices=options)


def first_dataset(options: list[tuple[str, str]]) -> str | None:
    """The dataset a method starts on when the one shown does not fit it: the user's newest of its
    kind (they imported it to train on it), else the first bundled sample."""
    return next((value for _label, value in options if value not in SAMPLES), options[0][1] if options else None)


def after_deletion(studio, method_key: str, shown: str | None):
    """The dataset list once a dataset was deleted (Data tab); the one shown, when it was that one, gives
    way to the method's first dataset."""
    options = dataset_choices(studio, method_key if method_key in METHODS else "lora")
    if shown in [value for _label, value in options]:
        return gr.update(choices=options)
    return gr.update(choices=options, value=first_dataset(options))


def method_on(studio, key: str, dataset_ref: str, more_epochs: bool = True, start: str | None = None,
              values: dict | None = None) -> tuple:
    """For a handler that sets the Train tab's method and dataset together (outputs: dataset, the
    form's `wanted`, method): the method's change reads the dataset from `wanted` (from the page it
    would read the dataset from before). The method starts from its own settings: the shared edits of the
    method before (an SFT run's epochs) are not carried into it. A dataset of a few votes or labels gets
    the epochs a run needs to move the model (method_service.enough_epochs: 5 pairs were 2 steps); the reason is
    returned last, for the handler's message (its held-out rows counted as a run from `start` holds them out;
    `values`: the settings the change of method will show, whose batch size and held-out share count)."""
    settings, why = method_service.enough_epochs(studio, key, dataset_ref, start, values) if more_epochs else ({}, "")
    return (gr.update(choices=dataset_choices(studio, key), value=dataset_ref),
            form_memory.chosen(key, dataset_ref, carry=False, settings=settings), key, why)


def model_choices(studio) -> list[tuple[str, str]]:
    """Where a run can start: the built-in model, or any finished run's result."""
    out = [("Built-in SmolLM2-135M-Instruct (default)", "default")]
    datasets = studio.dataset_titles()
    for run in studio.model_runs():
        label = METHODS[run["method"]].label if run["method"] in METHODS else run["method"]
        out.append((f"Result of run {run['id']}: {label} on {datasets.get(run['dataset_id'], '?')}",
                    f"run:{run['id']}"))
    return out + export_service.model_choices(studio)


# Every estimate of the Train tab: one at a time, in the order asked (see where they are wired), and its
# inputs as the page sent them (`on_estimate` reads them itself)
ESTIMATE_QUEUE = {"concurrency_limit": 1, "concurrency_id": "train-estimate", "preprocess": False}

# A first run that shows the model learning within minutes on the FAQ sample (bench/faq_quality.py)
QUICK_RUN = {"num_train_epochs": 3.0, "learning_rate": 3e-3}


def field_named(err: Exception, method_key: str) -> str:
    """A settings error with the field as the form labels it: 'Epochs' (num_train_epochs): ..."""
    from pipelines.methods import describe

    text = str(err)
    for info in describe(METHODS[method_key].params):
        text = text.replace(f"parameter '{info.name}'", f"'{info.label}' ({info.name})")
    return text


def _method_help(key: str) -> str:
    spec = METHODS[key]
    merge = "can be merged into the base model" if spec.mergeable else \
        "stays a separate file" if spec.artifact == "adapter" else "is a whole model"
    return f"{spec.summary}\n\n*When to use:* {spec.when_to_use} *(Result {merge}.)*"


NOT_PREPARED = "The memory estimate appears once the built-in model is prepared (on the first run or chat)."


def estimate_text(studio, model_spec, dataset_ref, method_key, params, devices=None, rewards=None) -> str:
    """The line shown above the Start button: expected peak memory, fit, time per epoch (and with several
    processes what each device holds)."""
    line = _estimate_line(studio, model_spec, dataset_ref, method_key, params, devices, rewards)
    spec = METHODS.get(method_key)
    if spec and not dataset_ref and not dataset_choices(studio, method_key):  # KTO before any thumbs
        return (f"**No data for {spec.label} yet:** it trains on {KIND_WORDS[spec.data_kind]}; import some on the "
                f"Data tab.\n\n{line}")
    return line


UNAVAILABLE = "Estimate unavailable:"


def _estimate_line(studio, model_spec, dataset_ref, method_key, params, devices=None, rewards=None) -> str:
    if not method_service.model_ready(studio, model_spec or "default"):
        return NOT_PREPARED
    try:
        est = method_service.estimate(studio, model_spec or "default", method_key, params, dataset_ref, rewards)
    except ConfigError as err:
        return f"{UNAVAILABLE} {field_named(err, method_key)}"
    except (DataError, ModelError, OSError, ValueError) as err:
        return f"{UNAVAILABLE} {quoted(err)}"
    past = method_service.past_runs(studio, model_spec or "default", method_key)
    est = method_service.calibrated(est, past)
    line = method_service.summary_line(est, (params or {}).get("num_train_epochs"), past.overhead_s)
    try:
        per_device = method_service.devices_line(est, devices)
    except ConfigError as err:
        per_device = f"Devices: {quoted(err)}"
    return line + (f"\n\n{per_device}" if per_device else "")


def build(studio):
    selected = gr.State(None)  # the run this browser is looking at (an id only)
    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown("### 1. What to tune")
            quick = gr.Button("⚡ Quick first run: the FAQ sample in a few minutes", elem_id="train-quick",
                              size="sm")
            # what another tab set up here (Train on these preferences / labels) and why, above what it set:
            # under Start it was below the fold of a tab that opens at its top
            setup = gr.Markdown(elem_id="train-setup")
            # what was set up can start from where it is said: Start is at the foot of a long form, and a
            # newcomer pressed the quick run and waited for it to start (two walkthroughs)
            start_here = gr.Button("▶ Start training", variant="primary", visible=False, elem_id="train-start-here")
            model = gr.Dropdown(choices=model_choices(studio), value="default", label="Start from",
                                allow_custom_value=True,
                                info="The built-in SmolLM2-135M-Instruct, or a finished run's result (a "
                                     "preference method then keeps improving it); a local Hugging Face "
                                     "folder (safetensors) or a hub id like org/name can be typed in.",
                                elem_id="train-model")
            dataset = gr.Dropdown(choices=dataset_choices(studio), value="quillpad_faq", label="Dataset",
                                  info="What to learn from: a bundled sample or one you imported in the Data "
                                       "tab. Only datasets the method can use are offered (examples for SFT "
                                       "methods, preference pairs for DPO and its family, thumbs up/down for KTO).",
                                  elem_id="train-dataset")
            method = gr.Dropdown(choices=[(m.label, k) for k, m in METHODS.items()], value="lora",
                                 label="Method", elem_id="train-method",
                                 info="How the model learns; the Method tab compares them all.")
            method_help = gr.Markdown(_method_help("lora"))
            gr.Markdown("### 2. Settings")
            form = MethodForm(METHODS)
            memory = form_memory.states(studio)
            by_kind = form_memory.datasets_state(studio)
            # one composer, shown for every method that learns from reward functions (GRPO, RLOO, PPO)
            with gr.Group(visible=False) as reward_group:
                reward_widgets, collect_rewards, refresh_rewards, reward_pickers = reward_form.build(studio)
            # kept in this browser as the rest of the form is (a reload unticked *Matches a format* and put its
            # pattern back): at each change, in the order they came, without a trip to the server. Not the reward
            # model picked: the ones finished since are put up on load. (Outside the group, which is hidden
            # until a method with rewards is picked)
            rewards_kept = gr.BrowserState(None, storage_key=f"{form_memory.PREFIX}rewards",
                                           secret=form_memory.secret(studio))
            kept_rewards = [w for w in reward_widgets if w not in reward_pickers]
            gr.on([w.change for w in kept_rewards], None, kept_rewards, rewards_kept,
                  js="(...values) => ({values})", queue=False, show_progress="hidden")
            device_widgets = devices_form.build()
            device_inputs = list(device_widgets.values())
            estimate = gr.Markdown(elem_id="train-estimate")
            start = gr.Button("Start training", variant="primary", elem_id="start-training")
            message = gr.Markdown(elem_id="train-message")
        with gr.Column(scale=3):
            gr.Markdown("### 3. Runs")
            on_load_runs, run_outputs, run_handles = runs_panel.build(studio, selected)

    inputs = form.components
    _picked, kept, previous, wanted = memory
    # runs finished since the page loaded are offered when the list is opened (set from the runs panel's
    # refresh instead, an update of its choices opened the list by itself when a run finished)
    model.focus(lambda: gr.update(choices=model_choices(studio)), None, model, queue=False, show_progress="hidden")

    shown_methods = form_memory.ShownMethods()
    set_ups = form_memory.SetUps()  # what a Train-on-these button set up, until the page shows it

    def on_method(key, current, old_key, asked, applied, stored, kept_datasets, request: gr.Request, *fields):
        # the inputs come as the page sent them (preprocess=False): a reload, the quick run or a Train-on-
        # these button sets the dataset list and the method together, and the method's change still
        # carries the page's dataset from before, which Gradio would refuse before this runs ("... is not
        # in the list of choices"). The dataset such a handler chose comes in `asked`, kept on the server.
        if key not in METHODS:  # only through the API
            return [gr.skip()] * (len(form.outputs) + 6)
        shown_methods.note(request, key)
        # what a handler asked for is used by the next change of method only, and only if it is for the
        # method changed to: `asked` stays (its dataset is what that kind comes back to), `applied` holds
        # the id of the last one a change has seen (one a handler set on the method shown would otherwise
        # be applied at a later change back to it, over what was picked since)
        pending = isinstance(asked, dict) and asked.get("id") != applied
        fresh = pending and asked.get("method") == key
        seen = asked["id"] if pending else gr.skip()
        if key == old_key:
            # the fields and the dataset are this method's already: set by the handler that set `previous`
            # to it (the quick run, the advice, a reload), or by this same change, which the page sends
            # twice, the second after the first's reply (2.5 s later on a busy machine); read before a
            # quick run pressed meanwhile and answered after it, it put back the dataset and the fields
            # the quick run had replaced. Only what follows from the method itself is set.
            return [_method_help(key), gr.skip(), *[gr.skip()] * len(form.outputs),
                    gr.update(visible=METHODS[key].rewards), gr.skip(), gr.skip(), seen]
        stored = stored if isinstance(stored, dict) else {}
        fields = preprocessed(form.components, list(fields))
        carry, settings = True, None
        if fresh:
            current = asked.get("dataset") or current
            carry, settings = asked.get("carry", True), asked.get("settings")
        options = dataset_choices(studio, key)
        known = [value for _label, value in options]
        shown, stored = form_memory.switched(form, key, old_key, stored, fields, carry, settings)
        kind = METHODS[key].data_kind
        if current not in known:  # the dataset this kind of data was last shown with, else the newest
            back = kept_datasets.get(kind) if isinstance(kept_datasets, dict) else None
            current = back if back in known else first_dataset(options)
        chosen = gr.update(choices=options, value=current)
        # the key into `previous` here, not in a step after: that step read the page's method, which
        # a quick next pick had already changed, and the carried edits were taken from the wrong method
        return [_method_help(key), chosen, *shown, gr.update(visible=METHODS[key].rewards), stored, key, seen]

    # the id of the last `wanted` a change of method has seen (`wanted` itself is not cleared: a cleared
    # one, sent back before the dataset's kind had followed it, left the kind on the dataset before)
    applied = gr.State(None)
    # outside the queue: behind an estimate that is measuring the model, the new method's form (and the
    # saved picks that follow it) came seconds late, and a reload meanwhile brought back the old method
    method_settled = method.change(on_method, [method, dataset, previous, wanted, applied, kept, by_kind,
                                               *form.components],
                                   [method_help, dataset, *form.outputs, reward_group, kept, previous, applied],
                                   queue=False, preprocess=False)

    def on_wanted(asked, kept_datasets):
        """A dataset a handler set with its method (the quick run, the advice, Train on these, a reload)
        is the one its kind comes back to, also when the method shown was already that one (its change
        does not run then)."""
        if not isinstance(asked, dict) or asked.get("method") not in METHODS:
            return gr.skip()
        key, ref = asked["method"], asked.get("dataset")
        if ref not in [value for _label, value in dataset_choices(studio, key)]:
            return gr.skip()
        return form_memory.with_dataset(kept_datasets, METHODS[key].data_kind, ref)

    wanted.change(on_wanted, [wanted, by_kind], by_kind, queue=False, show_progress="hidden")
    dataset.input(None, [dataset, method, by_kind], by_kind, queue=False, show_progress="hidden",
                  js=form_memory.picked_js({k: m.data_kind for k, m in METHODS.items()}))

    # a refusal is about the choice it was made for: once another model, dataset or method is
    # picked it no longer stands (a run's "Started ..." stays). Wired before the estimate: the page
    # runs the handlers of one change in the order they were wired, each after the one before is
    # done, and the estimate of a model not measured yet takes seconds
    # Picked by the person (.input), or set up by the quick run or a Train-on-these button (`setup`): a server
    # reply that set the dataset list late (the page's load, a method's second change) wiped a refusal that had
    # just come back, before it could be read (CI saw it twice)
    gr.on([model.input, dataset.input, method.input, setup.change],
          lambda said: "" if (said or "").startswith("**Could not start") else gr.skip(), message, message,
          queue=False, show_progress="hidden")
    # ... and once a setting is changed (an Epochs of 0 put right left "Could not start: 'Epochs' ..." under
    # Start beside a good estimate). In the page: every field of every method, no server trip each. Edits
    # by the person only (.input): a field a slower server reply set after Start's refusal had come back
    # (a page still loading, a method's form on a busy machine) wiped the refusal before it could be read.
    # Wired before the form's memory: the page runs one input's handlers in turn, each after the one before
    # is done, and this one, behind the queued save of the edit, ran after Start's reply on a busy machine
    # and wiped the refusal of the value just typed (CI: an Epochs of 0, refused, then gone 0.2 s later)
    gr.on([w.input for w in [*form.widgets.values(), *device_inputs, *reward_widgets]], None, message, message,
          js="(said) => (said || '').startsWith('**Could not start') ? '' : said", queue=False,
          show_progress="hidden")
    # what was picked and typed survives a reload; shared edits follow a change of method. Wired before
    # the estimate: the page runs one change's handlers in the order they were wired, and the estimate of
    # a model not measured yet takes seconds (a reload meanwhile lost the pick)
    restore, memory_inputs, memory_outputs = form_memory.wire(
        studio, (model, dataset, method), form, memory,
        lambda key: (model_choices(studio), dataset_choices(studio, key)), method_settled, shown_methods, set_ups)

    def devices_of(values) -> dict:
        return dict(zip(device_widgets, values))

    def on_estimate(request: gr.Request, model_spec, dataset_ref, method_key, *values, settled: bool = False):
        # the inputs as the page sent them (preprocess=False): a handler that sets the dataset list with
        # the model or a setting fires their changes while the page can still hold the dataset from
        # before, which Gradio would refuse; the dataset's own change follows with the new one
        model_spec, dataset_ref, method_key, *values = preprocessed(
            estimate_inputs, [model_spec, dataset_ref, method_key, *values])
        values, device_values = values[:len(inputs)], values[len(inputs):]
        device_values, reward_values = device_values[:len(device_inputs)], device_values[len(device_inputs):]
        params = form.values(method_key, list(values)) if method_key in METHODS else {}
        # what a Train-on-these button set up, while the fields still show the method before
        params = set_ups.for_estimate(request, method_key, dataset_ref, params, settled) if params else params
        chosen = collect_rewards(*reward_values) if method_key in METHODS and METHODS[method_key].rewards else None
        return estimate_text(studio, model_spec, dataset_ref, method_key, params, devices_of(device_values), chosen)

    # (with the reward functions: a reward model among them is loaded beside the run and reads every reply)
    estimate_inputs = [model, dataset, method, *inputs, *device_inputs, *reward_widgets]
    scoring = [w for w in reward_widgets if getattr(w, "elem_id", None) in ("reward-reward_model", RUN_PICKER)]
    # after the dataset list is the new method's (read with the change, the old method's dataset can
    # be one the new list lacks, and the server refuses it: "... is not in the list of choices")
    # one estimate at a time, in the order asked: two at once (a model still being measured, then an
    # edit of the epochs) could finish in either order and leave the older answer on the page
    def on_settled(request: gr.Request, *values):
        # (this step reads the fields from before the change's reply: measured, it sent the SFT run's epochs
        # after an estimate of the 10 epochs set had come; what was set up is estimated until it has come)
        return on_estimate(request, *values, settled=True)

    method_settled.then(on_settled, estimate_inputs, estimate, **ESTIMATE_QUEUE)
    # a setting that changes the memory or time (a change of method sets several at once), the model,
    # the data, what each device holds; a run finishing here (its speed and start-up time calibrate it)
    gr.on([dataset.change, model.change, run_handles["finished"].change,
           *[w.change for slot, w in form.widgets.items() if slot[0] in COST_FIELDS],
           *[device_widgets[name].change for name in ("strategy", "num_processes", "num_machines", "offload")],
           *[w.change for w in scoring]],
          on_estimate, estimate_inputs, estimate, trigger_mode="always_last", **ESTIMATE_QUEUE)

    def on_fixed(request: gr.Request, said, *values):
        """Any other setting: a wrong value is said at once (it was said only by Start, or with the next change of
        a setting that changes the cost), and one put right while the estimate names it is estimated again (a
        learning rate put right left its refusal on the page)."""
        if (said or "").startswith(UNAVAILABLE):
            return on_estimate(request, *values)
        _model, _dataset, method_key, *fields = preprocessed(estimate_inputs, list(values))
        if method_key not in METHODS:
            return gr.skip()
        try:
            parse(METHODS[method_key].params, form.values(method_key, fields[:len(inputs)]))
        except ConfigError as err:
            return f"{UNAVAILABLE} {field_named(err, method_key)}"
        return gr.skip()

    gr.on([w.change for slot, w in form.widgets.items() if slot[0] not in COST_FIELDS], on_fixed,
          [estimate, *estimate_inputs], estimate, trigger_mode="always_last", **ESTIMATE_QUEUE)

    start_inputs = [model, dataset, method, *inputs, *reward_widgets, *device_inputs]
    TWIN_WITHIN_S = 10  # the same settings started again this soon, while that run waits or trains: one run

    def on_start(*values):
        # as the page sent them, read here: the server's list of datasets can be one a slower event (the
        # page's load) set for the method before, while the page shows the new method's list and pick
        model_spec, dataset_ref, method_key, *values = preprocessed(start_inputs, list(values))
        if method_key not in METHODS:  # only through the API
            return f"**Could not start:** there is no method {method_key!r}", gr.skip()
        values, device_values = values[:-len(device_inputs)], values[-len(device_inputs):]
        values, reward_values = values[:len(inputs)], values[len(inputs):]
        params = form.values(method_key, list(values))
        chosen = collect_rewards(*reward_values) if METHODS[method_key].rewards else None
        if chosen == []:  # said in the page's words (the library's names the config file's 'rewards' list)
            return (f"**Could not start:** {METHODS[method_key].label} learns from reward functions: tick at least "
                    "one under *Reward functions* (e.g. *The number is right* for sums with an answer)."), gr.skip()
        try:
            run_id = studio.start_run(model=model_spec, dataset=dataset_ref, method=method_key, params=params,
                                      rewards=chosen, devices=devices_of(device_values), twin_within_s=TWIN_WITHIN_S)
        except AlreadyStarted as err:  # Start clicked twice: the run the first click started
            return f"Started run `{err.run_id}` (Start was pressed again: still one run).", err.run_id
        except ConfigError as err:  # named as the form names it
            return f"**Could not start:** {field_named(err, method_key)}", gr.skip()
        except (DataError, ModelError, RunError) as err:
            return f"**Could not start:** {quoted(err)}", gr.skip()
        twins = studio.same_settings_running(run_id)
        if twins:  # pressed again past the window (or the same recipe on purpose): two runs, and said so
            return (f"Started run `{run_id}`. Run `{twins[0]['id']}` has the very same settings and is still "
                    f"{twins[0]['status']}: this is a second one (cancel one in the runs panel if "
                    "Start was pressed twice by mistake)."), run_id
        return f"Started run `{run_id}`.", run_id

    # a run that started: its panel (top right, out of sight below a long form) is brought into view
    for button in (start, start_here):
        button.click(on_start, start_inputs, [message, selected], preprocess=False).then(
            # (a refusal, said under Start at the foot of the form, into view: pressed at the top it was unseen)
            None, message, None, js="(said) => { const started = (said || '').startsWith('Started run'); "
                                    "document.getElementById(started ? 'runs-table' : 'train-message')?.scrollIntoView("
                                    "{behavior: 'smooth', block: started ? 'start' : 'center'}); }").then(
            lambda said: "" if (said or "").startswith("Started run") else gr.skip(), message, setup, queue=False,
            show_progress="hidden")  # what was set up has been started: the note's "press Start" is done
    # shown with what was set up (the quick run, Train on these preferences or labels), gone with it
    setup.change(lambda said: gr.update(visible=bool((said or "").strip())), setup, start_here, queue=False,
                 show_progress="hidden")

    # what was set up is undone by the person's own picks: its "Set to DPO… press Start" would mislead, as
    # would the quick run's recipe over another model, dataset or method (inputs, not changes: the quick
    # run and the loop's buttons set all three themselves)
    def on_own_pick(request: gr.Request):
        set_ups.end(request)  # its settings are no longer what the estimate is for
        return ""

    gr.on([model.input, dataset.input, method.input], on_own_pick, None, setup, queue=False,
          show_progress="hidden")

    def on_quick(stored):
        """The recipe that shows learning soonest on the bundled FAQ (measured: bench/faq_quality.py)."""
        settings = {**form.defaults("lora"), **QUICK_RUN}  # every LoRA setting back to its default, then the recipe
        stored = form_memory.started_afresh(stored, "lora", settings)
        # the time is in the line above Start once the built-in model is prepared (a server started without
        # `studio prepare` has it only after the first run or chat: the note promised a line that was not there)
        when = ("the line above Start says how long it takes here" if method_service.model_ready(studio, "default")
                else "a few minutes on a 2-core CPU, 1.9 min of training measured, after about half a minute that "
                "prepares the built-in model on first use")
        return (gr.update(value="default"), gr.update(choices=dataset_choices(studio, "lora"), value="quillpad_faq"),
                *form.updates("lora", settings),
                f"{QUICK_SET_UP} LoRA on the *Quillpad support FAQ* sample with fewer epochs at a "
                f"higher learning rate ({when}). Press *Start training*; "
                "when it finishes, *Chat with this run* puts it next to the built-in model — ask it "
                "*How long is the Quillpad warranty?*", "",  # (a run's "Started …" under Start is old news)
                "lora", stored, form_memory.chosen("lora", "quillpad_faq"),
                "lora")  # lora as the method before: nothing carried in; the switch reads the kept recipe

    # the method last: its change reads the fields, `previous`, `wanted` and what is kept, all set before it.
    # Its note right under the button (under Start it was below the fold: "did it start?")
    quick.click(on_quick, kept, [model, dataset, *form.outputs, setup, message, previous, kept, wanted, method])

    def on_load(key):
        """Datasets and runs made since the server started, for the method the page shows."""
        return (gr.update(choices=dataset_choices(studio, key if key in METHODS else "lora")),
                gr.update(choices=model_choices(studio)),
                *on_load_runs(), *refresh_rewards())

    # picks: what the Method tab reads and sets; the estimate is refreshed after the page loads
    picks = (model, dataset, method)
    run_handles = {**run_handles, "selected": selected, "train_message": message, "train_setup": setup, "form": form,
                   "previous": previous, "kept": kept, "wanted": wanted, "datasets_kept": by_kind,
                   "set_ups": set_ups, "rewards_kept": rewards_kept, "kept_rewards": kept_rewards}
    return (on_load, [dataset, model, *run_outputs, *reward_pickers], picks, (on_estimate, estimate_inputs, estimate), run_handles,
            (restore, memory_inputs, memory_outputs))
