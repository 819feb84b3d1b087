"""Chat tab: two models answer the same prompt side by side, streaming at the same time; blind
battles hide (and shuffle) the names until the vote; votes become win rates and preference data."""

from __future__ import annotations

import functools
import random
import time
import uuid

import gradio as gr

from components import form_memory
from components.dataset_note import cut_chosen_note, made_or_found
from components.text import literal, quoted, unverbatim, verbatim
from pipelines import arena
from pipelines.chat import GenerationSettings
from pipelines.data import DataError
from pipelines.models import ModelError
from studio import chat_service, method_service
from studio.chat_service import ChatError

# the model pickers' labels and the first one's help: (label of one, of the other, help), plain and blind
# (a help line for each: with one, the two boxes stood at different heights)
PICKERS = {False: ("Model A", "Model B", "The base, or a run's tuned model. A local model folder can be typed in.",
                   "The model A is compared with, picked the same way."),
           True: ("One contender", "The other contender",
                  "Blind battle: each round puts these two on random sides, named after your vote.",
                  "Which side each is on shows after your vote.")}
NEW_BLIND_ROUND = ("A new blind round on the same prompt: the last round's names were shown, so the sides are "
                   "shuffled again.")
SAME_REPLIES_AGAIN = ("**Not a new blind round:** with a fixed *Seed* (or *Temperature* 0) each model writes the same "
                      "reply again, and you have just seen which wrote which. Set *Seed* to -1 and *Temperature* above "
                      "0 under Generation settings for new replies, or send another prompt.")
HIDDEN = ("Model A (hidden until you vote)", "Model B (hidden until you vote)")
STREAM_EVERY_S = 0.08
PROGRESS_EVERY_S = 1.0  # the line under Stop that says how far the replies are
VOTES = (("a", "A is better"), ("b", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))


# the blind battle's own randomness, from the system: Python's shared generator is the one any library's
# set_seed (transformers', accelerate's) seeds, and a newcomer's server put the tuned model on side A in 9
# rounds of 9, the order random.seed(42) gives (which call seeded it was not found)
_SIDES = random.SystemRandom()


def shuffled(specs: list[str]) -> list[str]:
    """The two models in a random order, whatever seeded Python's shared generator."""
    specs = list(specs)
    _SIDES.shuffle(specs)
    return specs


def new_battle() -> dict:
    # per browser, ids only: which model is on which side, whether names show, whether voted
    return {"specs": None, "blind": False, "voted": False, "complete": False}


def plain(messages) -> list[dict]:
    """Chatbot messages (content may be a list of parts) -> {role, content} strings, the prompts as sent."""
    out = []
    for m in messages or []:
        content = m["content"]
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        content = str(content)
        if m["role"] == "assistant" and content == chat_service.NO_REPLY:
            # (the page's stand-in for a side stopped before its first word: sent back to the model as its own
            # earlier reply, and stored in a vote's prompt, "…" became an assistant turn of exported training data)
            content = ""
        out.append({"role": m["role"], "content": unverbatim(content) if m["role"] == "user" else content})
    return out


def shown(messages: list[dict]) -> list[dict]:
    """{role, content} strings -> the Chatbot's messages: the prompts shown as sent (text.verbatim: a prompt's
    `<b>this</b>` came out bold, its `<script>` gone); the replies as Markdown, as chat models write them."""
    return [{**m, "content": verbatim(m["content"])} if m["role"] == "user" else m for m in messages]


def side_labels(studio, battle: dict) -> tuple[str, str]:
    if not battle["specs"] or (battle["blind"] and not battle["voted"]):
        return HIDDEN if battle["blind"] else ("Model A", "Model B")
    return tuple(f"{side}: {chat_service.label(studio, spec)}" for side, spec in zip("AB", battle["specs"]))


# each pair from its tuned (or newer) model's side (chat_service.newer_first), whichever side or
# form field it was picked in: named "Model" and "Against", not 1 and 2
RESULT_HEADERS = ["Model", "Against", "Votes were", "Votes", "Model won", "Against won", "Ties / both bad",
                  "Model's win rate (95% interval)"]
RESULT_WIDTHS = ["19%", "19%", "10%", "7%", "8%", "8%", "10%", "19%"]  # the win rate with its interval is not cut off


def send_button(busy: bool) -> dict:
    """Send while the replies are written: it says so and takes no click (Stop ends them)."""
    return gr.update(interactive=not busy, value="Answering…" if busy else "Send")


def answering_controls(busy: bool) -> tuple:
    """(Send, the prompt box, Regenerate, Stop) while the replies are written, or after. A second prompt or a
    Regenerate then started a second answer beside the first (Enter in the box still sent, with Send off):
    the two wrote over each other's conversation and a turn was lost. Stop is on only then, and red."""
    return (send_button(busy), gr.update(interactive=not busy), gr.update(interactive=not busy),
            gr.update(interactive=busy, variant="stop" if busy else "secondary"))


def one_line(err: BaseException) -> str:
    """An error as one line: its own sentence (ours), else the first line of a library's text."""
    if isinstance(err, (ChatError, ModelError)):
        return str(err)
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    return f"{first} ({type(err).__name__})" if first else type(err).__name__


def context_note(decoders) -> str:
    """What cut the replies short, and what the models did not read: Max new tokens, or the model's context
    window (prompt and reply together), which also leaves out the oldest messages of a long conversation."""
    def sides(which) -> str:
        return " and ".join(side for side, dec in zip("AB", decoders) if which(dec))

    notes = []
    if sides(lambda d: d.cut_off and not d.out_of_room):
        notes.append(f"Model {sides(lambda d: d.cut_off and not d.out_of_room)}: the reply stopped at *Max new "
                     f"tokens* ({decoders[0].settings.max_new_tokens}) before its end; raise it under Generation "
                     "settings for longer replies.")
    for side, dec in zip("AB", decoders):
        if dec.out_of_room and dec.read > 1:
            notes.append(f"Model {side}: the reply filled what the model reads at once ({dec.context:,} tokens, "
                         "conversation and reply together); press Clear to start a new conversation for longer "
                         "replies.")
        elif dec.out_of_room:  # only the question was left to read: a new conversation would not help
            notes.append(f"Model {side}: the reply filled what the model reads at once ({dec.context:,} tokens): "
                         f"the question takes {dec.prompt_ids.shape[1]:,} of them (with the chat template and any "
                         "system prompt); shorten it for a longer reply.")
    if sides(lambda d: d.dropped):
        most = max(d.dropped for d in decoders)
        notes.append(f"Model {sides(lambda d: d.dropped)} did not read the oldest {most} message"
                     f"{'s' if most != 1 else ''} of this conversation: with them it is longer than the model "
                     f"reads at once ({max(d.context for d in decoders if d.dropped):,} tokens, with *Max new "
                     "tokens* for the reply).")
    return " ".join(notes)


def _seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min"


def writing_note(decoders, elapsed: float, rate: float | None = None) -> str:
    """How far the replies are, under Stop: tokens so far, their rate, and the longest the rest can take
    (each side writes at most *Max new tokens*; a reply usually ends sooner). `rate`: tokens a second since
    the first token (None: not measured yet; the first one waits for the prompt to be read, and its time
    made a minute-long guess of a 10-second reply). Once all are done: how long they took. On a CPU a pair
    of replies takes from seconds to minutes, and the page said nothing of it."""
    made = sum(len(d.generated) for d in decoders)
    tokens = f"{made} token{'s' if made != 1 else ''}"
    if all(d.done for d in decoders):
        overall = f", {made / elapsed:.1f} tokens/s" if made and elapsed > 0 else ""
        return f"Written in {_seconds(elapsed)}: {tokens}{overall}."
    if not made:
        return "Writing the replies…"
    if not rate:
        return f"Writing: {tokens} so far…"
    left = sum(d.settings.max_new_tokens - len(d.generated) for d in decoders if not d.done)
    limit = max(d.settings.max_new_tokens for d in decoders)
    return (f"Writing: {tokens} so far, {rate:.1f} tokens/s; at most {_seconds(left / rate)} more (*Max new "
            f"tokens* {limit} per reply), less if the replies end sooner. *Stop* keeps them as they are.")


BLIND_OR_NAMED = {True: "blind", False: "names shown"}


def results_table(studio) -> tuple[dict, str]:
    votes = chat_service.counted_votes(studio)
    rows = []
    # blind votes and votes with the names shown apart: knowing which side is the tuned model sways a vote
    for r in map(chat_service.newer_first, arena.win_rates(votes, by_blind=True)):  # the newer model's win rate
        rows.append([chat_service.label(studio, r["first"]), chat_service.label(studio, r["second"]),
                     BLIND_OR_NAMED[r["blind"]], r["votes"], r["wins_first"], r["wins_second"], r["ties"],
                     # a verdict only where the vote was fair: with the names shown a lean can be the voter's
                     chat_service.win_rate_text(r, judged=True) if r["blind"] else
                     f"{chat_service.win_rate_text(r)}: no verdict, the names were shown"])
    table = {"headers": RESULT_HEADERS, "data": rows}
    warning = arena.position_bias(votes)
    cast = sum(r[3] for r in rows)
    note = (f"{cast} vote{'s' if cast != 1 else ''} so far. *Model* is the tuned model (the newer run when both are "
            "runs), *Against* the one it was compared with. Ties and 'both bad' count half to each side. "
            "*Better* or *worse* (of blind votes) once the 95% interval is clear of 50%; until then a win rate "
            "can be luck. The interval is one you may read after every vote: stopping the moment it says *better* "
            "stays 95% sure (an interval for one look, read after each vote, said *better* or *worse* of two equal "
            "models one time in five within 20 votes), so it asks for more votes than a one-look interval would.")
    if any(row[2] == BLIND_OR_NAMED[False] for row in rows):
        note += (" Votes cast with the names shown are counted apart from blind ones: knowing which side is "
                 "the tuned model can sway a vote, so the blind rows are the fair comparison (tick *Blind "
                 "battle*).")
    return table, (f"⚠️ {warning}\n\n{note}" if warning else note)


def _vote_handler(vote, key):
    # explicit parameters: Gradio finds the gr.Request argument by its annotation
    def on_vote(history_a, history_b, state, name, system, temp, top, max_new, rep, seed_value,
                request: gr.Request):
        return vote(key, history_a, history_b, state, name, system, temp, top, max_new, rep, seed_value,
                    request=request)

    return on_vote


def same_pair_note(studio, spec_a: str | None, spec_b: str | None) -> str:
    """Said before anyone waits for replies: a vote between a model and itself is refused (before any
    run has finished, both sides can only be the built-in model)."""
    if not chat_service.same_model(studio, spec_a, spec_b):
        return ""
    return ("Both sides are the same model: you can read its replies, but a vote needs two different models. "
            "Pick another on one side, or, with none yet, train one first (*⚡ Quick first run* in the Train tab "
            "takes a few minutes).")


def kept_pair(studio, kept, options: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The two models a browser kept ({"a": spec, "b": spec}, saved as a person picks them) when both can
    still be chatted with: a listed model or run, or a model typed in (a folder that still exists, a hub
    id); a run that is gone, or a pair of one model with itself, is not brought back (the default pair
    is put up)."""
    if not isinstance(kept, dict):
        return None
    pair = kept.get("a"), kept.get("b")
    if not all(chat_service.still_offered(spec, options) for spec in pair) or chat_service.same_model(studio, *pair):
        return None
    return pair


def build(studio):
    battle = gr.State(new_battle())
    choices = chat_service.choices(studio)
    with gr.Row():
        first, second = chat_service.default_pair(studio)  # the newest tuned model against its base
        # the pickers wider than the switch: a run's name, "Tuned: LoRA on Quillpad support FAQ (r20261205-…)",
        # was cut off in a third of the row
        model_a = gr.Dropdown(choices=choices, value=first, label=PICKERS[False][0], allow_custom_value=True,
                              info=PICKERS[False][2], elem_id="chat-model-a", scale=2)
        model_b = gr.Dropdown(choices=choices, value=second, label=PICKERS[False][1], allow_custom_value=True,
                              info=PICKERS[False][3], elem_id="chat-model-b", scale=2)
        blind = gr.Checkbox(label="Blind battle", value=False, elem_id="chat-blind", scale=1,
                            info="Shuffle the two models between sides and hide their names until you vote: "
                                 "judge the answers, not the names.")
    same_note = gr.Markdown(same_pair_note(studio, first, second), elem_id="chat-same-note")
    # in a blind battle the pickers name the two contenders, not the sides: each round shuffles them
    blind.change(lambda on: (gr.update(label=PICKERS[bool(on)][0], info=PICKERS[bool(on)][2]),
                             gr.update(label=PICKERS[bool(on)][1], info=PICKERS[bool(on)][3])), blind,
                 [model_a, model_b], queue=False)
    with gr.Row():
        scorer = gr.Dropdown(choices=chat_service.scorer_choices(studio), value="", label="Score replies with",
                             info="A reward model you trained (Train tab, method 'Reward model') scores each "
                                  "finished reply: higher = more like the replies people preferred.",
                             elem_id="chat-scorer")
        scores = gr.Markdown(elem_id="chat-scores")
    with gr.Accordion("Generation settings", open=False):
        system_prompt = gr.Textbox(label="System prompt", lines=2, elem_id="chat-system",
                                   info="Instructions both models get before the conversation, e.g. 'Answer in "
                                        "one sentence.' Empty = the model's own default.")
        with gr.Row():
            temperature = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature", elem_id="chat-temperature",
                                    info="Randomness. 0 = always the most likely word (same answer every time); "
                                         "0.7 = natural; above 1 = adventurous, often incoherent.")
            top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p",
                              info="Only pick from the most likely words that together make up this share of "
                                   "the probability. Lower = safer, more predictable.")
        with gr.Row():
            max_new_tokens = gr.Slider(8, 1024, value=256, step=8, label="Max new tokens", elem_id="chat-max-new-tokens",
                                       info="Longest reply, in tokens (about ¾ of a word each).")
            repetition_penalty = gr.Slider(1, 2, value=1.1, step=0.05, label="Repetition penalty",
                                           info="Above 1 discourages repeating the same words; 1 = off.")
            seed = gr.Number(value=-1, precision=0, label="Seed", elem_id="chat-seed",
                             info="A fixed number gives the same answers for the same settings; -1 = new each time.")
    with gr.Row():
        chat_a = gr.Chatbot(label="Model A", height=380, elem_id="chat-a")
        chat_b = gr.Chatbot(label="Model B", height=380, elem_id="chat-b")
    compare_run = gr.State(None)  # the run whose held-out prompts are offered (an id only)
    source = gr.State("own")  # where the offered prompts come from: own, votes or heldout
    with gr.Accordion("Prompts to compare on", open=False) as prompts_box:
        with gr.Row():
            suggested = gr.Dropdown(choices=[], label="Prompt", elem_id="chat-suggested", scale=3,
                                    info="Held-out prompts of the tuned model's dataset (never trained on), or "
                                         "the chat votes' prompts. Picking one puts it in the box below.")
            next_prompt = gr.Button("Next prompt", elem_id="chat-next-prompt", scale=0)
    with gr.Row():
        prompt = gr.Textbox(placeholder="Ask both models something…", show_label=False, scale=5,
                            elem_id="chat-prompt")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
    with gr.Row():
        stop = gr.Button("Stop", elem_id="chat-stop", interactive=False)  # (while the replies are written)
        regenerate = gr.Button("Regenerate", elem_id="chat-regenerate")
        clear = gr.Button("Clear", elem_id="chat-clear")
    progress = gr.Markdown(elem_id="chat-progress")
    # a win is trained on as it stands (Train on these preferences): a walkthrough's vote for the better of two
    # wrong replies came back from the DPO run word for word, its wrong fact too
    gr.Markdown("Vote for the reply you would want the model to give: *Train on these preferences* teaches the "
                "winner as it is, its facts too. Both wrong? *Both are bad*.", elem_id="chat-vote-help")
    with gr.Row():
        # a model against itself cannot be voted on: the buttons say so by being off (the note above says why)
        votable = not chat_service.same_model(studio, first, second)
        vote_buttons = [gr.Button(text, elem_id=f"chat-vote-{key}", interactive=votable) for key, text in VOTES]
        voter = gr.Textbox(label="Your name", placeholder="anonymous, or your name (the Label tab's too)",
                           elem_id="chat-voter")
    vote_message = gr.Markdown(elem_id="chat-vote-message")

    # whether each page's vote buttons were last set on, noted by the server as each answer is made: the answers
    # are made one at a time, in the order the changes came, and reach the page in that order (a gr.State is read
    # by the page when it sends a change: one sent before the answer to the change before it still read the
    # buttons as on, left them off, and a blind re-comparison could not be voted on; CI, under load)
    buttons_on = form_memory.PerPage()
    SET_PAIR_S = 15.0  # seconds a pair a handler set stands against reads from before it (they come within a few)

    def on_pair(spec_a, spec_b, request: gr.Request, settled: bool = False):
        """The note, and the buttons only when they turn on or off: an update of theirs that arrived while a
        number was typed in the settings (a second model picked just before) lost the number typed. `settled`:
        the pair a handler has finished setting, read once it is on the page, whose buttons are set whatever
        was noted (the changes that setting both pickers fired can be answered out of order)."""
        set_pair = set_pairs.of(request)
        if not settled and set_pair and (spec_a, spec_b) != set_pair[0] and time.monotonic() - set_pair[1] < SET_PAIR_S:
            # a read of the pickers half set (the new A beside the old B: the new run against itself), answered
            # after the pair the handler set had settled: it turned the vote buttons off for good (CI, under load)
            return gr.skip(), *(gr.skip() for _ in vote_buttons)
        note = same_pair_note(studio, spec_a, spec_b)
        on = not note
        if buttons_on.of(request) is on and not settled:
            return note, *(gr.skip() for _ in vote_buttons)
        buttons_on.note(request, on)
        return (note, *(gr.update(interactive=on) for _ in vote_buttons))

    # the pair a handler set, once settled on the page, and when: changes that read another pair for a while after
    # are reads from before it was whole (the page sends both pickers' changes, each read as it is sent); a pick of
    # the person's own (.input, outside the queue: before its change is answered) ends it
    set_pairs = form_memory.PerPage()

    def pair_settled(spec_a, spec_b, request: gr.Request):
        set_pairs.note(request, ((spec_a, spec_b), time.monotonic()))
        return on_pair(spec_a, spec_b, request, settled=True)

    def picked(request: gr.Request):
        set_pairs.end(request)

    gr.on([model_a.input, model_b.input], picked, None, None, queue=False, show_progress="hidden")

    # one at a time, in the order the changes came: a comparison sets both pickers, and the page sends the first's
    # change with the other still on its old model (new run against itself, for a moment), then the second's
    gr.on([model_a.change, model_b.change], on_pair, [model_a, model_b], [same_note, *vote_buttons],
          trigger_mode="always_last", concurrency_limit=1, concurrency_id="chat-pair", show_progress="hidden")
    # what a person switches on or off (not a comparison that sets it): a line that named the sides,
    # "the tuned model (B)", would tell a blind round's answer
    streaming = form_memory.PerPage()  # each page's replies being written (respond), ended by a new round

    def on_blind(on, request: gr.Request = None):
        """The conversation on screen goes with the switch: its replies were written under the other mode
        (named, while the box says blind), and the next Send starts a new round anyway."""
        streaming.end(request)
        labels = HIDDEN if on else ("Model A", "Model B")
        said = ("Blind battle: each round puts the two models on random sides; their names show after your vote."
                if on else "Names shown: Model A on the left, Model B on the right.")
        # (and the line under it on how long the replies took: "Written in 3 s" stood under the emptied chat)
        return (gr.update(value=[], label=labels[0]), gr.update(value=[], label=labels[1]), new_battle(), said, "", "")

    with gr.Accordion("Results and export", open=False):
        results = gr.Dataframe(headers=RESULT_HEADERS, interactive=False, wrap=True, column_widths=RESULT_WIDTHS,
                               elem_id="chat-results")
        results_note = gr.Markdown(elem_id="chat-results-note")
        export_name = gr.Textbox(label="Dataset name", placeholder="empty: chat votes and the date and time", elem_id="chat-export-name")
        with gr.Row():
            export = gr.Button("Export votes as a preference dataset", elem_id="chat-export")
            train_prefs = gr.Button("Train on these preferences", variant="primary", elem_id="chat-train-prefs")
        export_message = gr.Markdown(elem_id="chat-export-message")

    settings_inputs = [system_prompt, temperature, top_p, max_new_tokens, repetition_penalty, seed]

    def settings_of(system, temp, top, max_new, rep, seed_value) -> GenerationSettings:
        return GenerationSettings(system_prompt=system or "", temperature=float(temp), top_p=float(top),
                                  max_new_tokens=int(max_new), repetition_penalty=float(rep),
                                  seed=int(seed_value if seed_value is not None else -1))

    def respond(text, history_a, history_b, state, spec_a, spec_b, is_blind, system, temp, top, max_new, rep,
                seed_value, request: gr.Request = None):
        """Stream both replies; a blind battle starts a new, shuffled round after each vote."""
        settings = (system, temp, top, max_new, rep, seed_value)  # (named: the page's request comes after them)
        mine = object()  # this page's replies being written, until a handler that starts over ends them
        streaming.note(request, mine)
        page = getattr(request, "session_hash", None)
        text = (text or "").strip()
        if not text:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), "Type a prompt first.", gr.skip()
            return
        given = (plain(history_a), plain(history_b), state)  # put back when the models cannot answer
        state = dict(state)
        if not state["voted"] and state.get("turn") and studio.store.turn_voted(state["turn"]):
            # voted, and this prompt sent before the vote's answer came back with the state saying so: the
            # round went on with its sides, soon named by that answer, and the next vote was stored as blind
            state["voted"] = True
        history_a, history_b = plain(history_a), plain(history_b)
        # (named, the sides are the pickers': the two swapped mid-conversation kept each side's old model under
        # the other's name; blind, they are shuffled, so the pair is what counts)
        same_pair = (set(state["specs"]) == {spec_a, spec_b} if is_blind else list(state["specs"]) == [spec_a, spec_b]
                     ) if state["specs"] is not None else False
        new_round = not same_pair or state["blind"] != bool(is_blind) or (is_blind and state["voted"])
        if new_round:
            specs = shuffled([spec_a, spec_b]) if is_blind else [spec_a, spec_b]
            history_a, history_b = [], []
            state = {"specs": specs, "blind": bool(is_blind), "voted": False}
        # the settings the replies are written under, for the vote (the boxes may change before it); the
        # turn takes one vote, however many vote buttons are clicked before the page hears of the first
        state.update(voted=False, complete=False, settings=vars(settings_of(*settings)), turn=uuid.uuid4().hex,
                     stored=None, ended=[])
        history_a = history_a + [{"role": "user", "content": text}]
        history_b = history_b + [{"role": "user", "content": text}]
        label_a, label_b = side_labels(studio, state)
        shown_a = shown(history_a) + [{"role": "assistant", "content": chat_service.NO_REPLY}]
        shown_b = shown(history_b) + [{"role": "assistant", "content": chat_service.NO_REPLY}]
        preparing = not all(method_service.model_ready(studio, spec.removeprefix("base:")) for spec in state["specs"])
        yield (gr.update(value=shown_a, label=label_a), gr.update(value=shown_b, label=label_b), state, "",
               method_service.PREPARING if preparing else "", "Writing the replies…")
        def refused(err):  # the conversation as it was (two "…" replies stayed waiting), said in one line
            labels = side_labels(studio, given[2])
            return (gr.update(value=shown(given[0]), label=labels[0]), gr.update(value=shown(given[1]), label=labels[1]),
                    given[2],
                    text, f"**Cannot chat:** {one_line(err)}", "")

        def superseded() -> bool:
            # Blind switched, Clear, or another comparison put up while these were written: their next update
            # wrote the old round back over it (cancelled, an update already on its way still came after the
            # handler's). Ended, with what each of those handlers sets, after any update of this stream.
            return bool(page) and streaming.of(request) is not mine

        ended = (gr.update(value=[]), gr.update(value=[]), new_battle(), gr.skip(), gr.skip(), "")
        try:
            decs = chat_service.decoders(studio, state["specs"], [history_a, history_b], settings_of(*settings))
        except Exception as err:  # noqa: BLE001  (a model that cannot be loaded; raised, the tab stayed locked)
            yield ended if superseded() else refused(err)
            return
        if superseded():  # (while the models loaded)
            yield ended
            return
        if preparing:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), "", gr.skip()
        from pipelines.chat import stream

        shown_at = told_at = 0.0
        started = time.monotonic()
        first = None  # (when the first token came, the tokens then): the rate is measured from there
        replies = stream(decs)
        while True:
            try:
                texts = next(replies)
            except StopIteration:
                break
            except Exception as err:  # noqa: BLE001  (a model failing mid-reply: the page stays usable)
                yield ended if superseded() else refused(err)
                return
            if superseded():
                yield ended
                return
            shown_a[-1] = {"role": "assistant", "content": texts[0] or chat_service.NO_REPLY}
            shown_b[-1] = {"role": "assistant", "content": texts[1] or chat_service.NO_REPLY}
            # at most ~12 page updates a second: one per token of each side kept the browser too
            # busy re-rendering to take a click (Stop, a vote) while the replies streamed
            if time.monotonic() - shown_at >= STREAM_EVERY_S:
                shown_at = time.monotonic()
                # the sides whose replies the model has ended, for a vote after Stop (the others are cut short);
                # a new dict each time: Gradio keeps a yielded State by reference, and a change made to it
                # after the last update the page got (Stop cancels between two) would say a reply shown cut
                # short had ended
                state = {**state, "ended": [side for side, dec in zip("ab", decs) if dec.done and not dec.cut_off]}
                made = sum(len(dec.generated) for dec in decs)
                first = first or ((shown_at, made) if made else None)
                rate = (made - first[1]) / (shown_at - first[0]) if first and shown_at - first[0] >= 0.5 else None
                told = shown_at - told_at >= PROGRESS_EVERY_S
                told_at = shown_at if told else told_at
                yield (shown_a, shown_b, state, gr.skip(), gr.skip(),
                       writing_note(decs, shown_at - started, rate) if told else gr.skip())
        state = {**state, "ended": [side for side, dec in zip("ab", decs) if not dec.cut_off]}
        if superseded():
            yield ended
            return
        said = context_note(decs) or gr.skip()
        yield (shown_a, shown_b, {**state, "complete": True}, gr.skip(), said,
               writing_note(decs, time.monotonic() - started))

    chat_io = [prompt, chat_a, chat_b, battle, model_a, model_b, blind, *settings_inputs]
    chat_out = [chat_a, chat_b, battle, prompt, vote_message, progress]

    def busy(answer):
        """While the replies are written, Send says so and takes no click (a prompt sent then did nothing,
        and said nothing); it comes back when they end, fail, are stopped or cleared (a .then below). In
        the first update: a listener of its own on the click ran only after the replies had ended."""
        @functools.wraps(answer)  # (named as the function it wraps: respond, redo)
        def answering(*args):
            for n, out in enumerate(answer(*args)):
                if n:
                    yield *out, *[gr.skip()] * 3
                    continue
                send_off, _box, regenerate_off, stop_on = answering_controls(busy=True)
                # the prompt box taken off too: emptied as the reply asked, or kept as it is
                box = gr.update(interactive=False, **({"value": out[3]} if isinstance(out[3], str) else {}))
                yield *out[:3], box, *out[4:], send_off, regenerate_off, stop_on
        return answering

    controls = [send, regenerate, stop]
    sent = send.click(busy(respond), chat_io, [*chat_out, *controls])
    submitted = prompt.submit(busy(respond), chat_io, [*chat_out, *controls])

    def redo(history_a, history_b, state, spec_a, spec_b, is_blind, system, temp, top, max_new, rep, seed_value,
             request: gr.Request = None):
        settings = (system, temp, top, max_new, rep, seed_value)
        history_a, history_b, given = plain(history_a), plain(history_b), state
        users = [m for m in history_a if m["role"] == "user"]
        if not users:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), "Nothing to regenerate yet.", gr.skip()
            return
        last = users[-1]["content"]
        cut_a = max(i for i, m in enumerate(history_a) if m["role"] == "user")
        cut_b = max(i for i, m in enumerate(history_b) if m["role"] == "user")
        # a blind round voted on has shown its names: asked again on those sides, the next vote would be
        # stored as blind by someone who knows which model is which. `respond` starts a new round on the
        # same prompt instead, its sides shuffled again, as a new prompt would.
        voted = state.get("voted") or bool(state.get("turn") and studio.store.turn_voted(state["turn"]))
        fresh = bool(state.get("blind") and voted and is_blind)
        if fresh and settings_of(*settings).repeats():
            # the same two replies again, which the vote has just named: a "blind" vote on them is not blind
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), SAME_REPLIES_AGAIN, gr.skip()
            return
        if not fresh:
            state = {**state, "voted": False}
        for out in respond(last, history_a[:cut_a], history_b[:cut_b], state, spec_a, spec_b, is_blind, *settings,
                           request=request):
            if isinstance(out[4], str) and out[4].startswith("**Cannot chat:**"):  # the last exchange comes back
                labels = side_labels(studio, given)
                out = (gr.update(value=shown(history_a), label=labels[0]),
                       gr.update(value=shown(history_b), label=labels[1]),
                       given, gr.skip(), out[4], out[5])
            if fresh and isinstance(out[4], str) and not out[4].startswith("**Cannot chat:**"):
                # said for the whole round: a note at its end (Max new tokens) replaced it as the replies ended
                out = (*out[:4], f"{NEW_BLIND_ROUND} {out[4]}".strip(), *out[5:])
            yield out

    regenerated = regenerate.click(busy(redo), chat_io[1:], [*chat_out, *controls])

    def on_score(history_a, history_b, state, run_id):
        """Both sides' last replies scored by the chosen reward model (not during a blind round:
        a score next to an unnamed reply would sway the vote)."""
        history_a, history_b = plain(history_a), plain(history_b)
        if not run_id or len(history_a) < 2 or history_a[-1]["role"] != "assistant":
            return ""
        if state.get("blind") and not state.get("voted"):
            return "Scores are hidden during a blind round; vote first."
        try:
            a, b = chat_service.score_replies(studio, run_id, [history_a, history_b])
        except ChatError as err:
            return f"**Cannot score:** {quoted(err)}"
        return (f"Reward model `{run_id}`: **A {a:+.2f}** · **B {b:+.2f}** (higher = more like the replies "
                "people preferred; the difference matters, not the numbers themselves)")

    score_io = [chat_a, chat_b, battle, scorer]
    for event in (sent, submitted, regenerated):
        event.then(lambda: answering_controls(busy=False), None, [send, prompt, regenerate, stop],
                   show_progress="hidden")
        # a reply stopped (or failed) is no longer being written: an update sent just before Stop arrived after
        # Stop's own, and "Writing: 1 token so far…" stayed (CI). Once the event is over, in the page
        event.then(None, progress, progress, js="(said) => (said || '').startsWith('Writing') ? '' : said",
                   queue=False, show_progress="hidden")
        event.then(on_score, score_io, scores)
    scorer.change(on_score, score_io, scores)
    # a stopped reply is a finished reply: it can be voted on as it stands
    stop.click(lambda state: ({**state, "complete": True}, "Stopped: the replies stand as they are (a vote takes "
                              "them so), or send the next prompt.", ""),
               battle, [battle, vote_message, progress], cancels=[sent, submitted, regenerated])

    def on_clear(request: gr.Request = None):
        streaming.end(request)
        return gr.update(value=[], label="Model A"), gr.update(value=[], label="Model B"), new_battle(), "", "", ""

    # the replies being written stop with these (respond ends them): their next update wrote the old round back
    # under the new labels (names shown over a shuffled blind round, whose vote was stored as blind)
    clear.click(on_clear, None, chat_out, cancels=[sent, submitted, regenerated])  # (and a respond still queued)
    # each reply panel's own clear icon clears the comparison, both sides: emptying one side alone left the two
    # answering different conversations, and a vote on them was stored as a pair on one prompt
    for panel in (chat_a, chat_b):
        panel.clear(on_clear, None, chat_out, cancels=[sent, submitted, regenerated])
    blind.input(on_blind, blind, [chat_a, chat_b, battle, vote_message, scores, progress], queue=False)

    def refuse(state, message):
        # the battle left as the page has it now: a refusal answered late (a click while the replies streamed)
        # sent back the state read at the click, and put an unfinished, unvoted round over the finished one
        return gr.skip(), gr.skip(), gr.skip(), message, gr.skip(), gr.skip()

    def vote(winner, history_a, history_b, state, name, *settings, request: gr.Request = None):
        history_a, history_b = plain(history_a), plain(history_b)
        if not state["specs"] or len(history_a) < 2 or history_a[-1]["role"] != "assistant":
            return refuse(state, "Ask something first: a vote compares two replies.")
        if not state.get("complete"):
            return refuse(state, "Wait until both replies are finished (or press Stop).")
        if [m for m in history_a[:-1] if m["role"] == "user"] != [m for m in history_b[:-1] if m["role"] == "user"]:
            return refuse(state, "The two sides answered different conversations, so their replies cannot be "
                                 "compared: press Clear and ask again.")
        if state["voted"]:  # a double click lands here too: what was stored stays said
            return refuse(state, " ".join(filter(None, (state.get("stored"), chat_service.ALREADY_VOTED))))
        unfinished = [side for side in "ab" if side not in state.get("ended", "ab")]
        try:
            chat_service.record_vote(
                # (signed in: the user name, as labels go; a name typed in a shared browser was someone else's)
                studio, voter=getattr(request, "username", None) or (name or "").strip() or "anonymous",
                model_a=state["specs"][0], model_b=state["specs"][1],
                winner=winner, blind=state["blind"], prompt_a=history_a[:-1], prompt_b=history_b[:-1],
                reply_a=history_a[-1]["content"], reply_b=history_b[-1]["content"],
                settings={**(state.get("settings") or vars(settings_of(*settings))),
                          # replies without their end (Max new tokens, or Stop): an export says so
                          "unfinished": unfinished},
                turn=state.get("turn"))
        except chat_service.AlreadyVoted:
            # another button's click of this turn was stored: the round is over for this state too (left as
            # it was, a blind battle's next prompt kept the named sides, and its vote was stored as blind)
            state = {**state, "voted": True}
            label_a, label_b = side_labels(studio, state)
            return gr.update(label=label_a), gr.update(label=label_b), state, gr.skip(), gr.skip(), gr.skip()
        except ChatError as err:
            return refuse(state, f"**Vote not stored:** {quoted(err)}")
        state = {**state, "voted": True}
        label_a, label_b = side_labels(studio, state)
        verdict = dict(VOTES)[winner]
        message = f"Vote stored: **{verdict}**. {label_a} · {label_b}."
        if winner in unfinished:  # said at the export only, a vote for a reply stopped after two tokens went by
            message += (" The winning reply was cut short (by *Stop*, or at *Max new tokens*): *Train on these "
                        "preferences* teaches it as it stands, cut off.")
        state["stored"] = message
        if state["blind"]:
            message += " Send a new prompt for the next blind round."
        table, note = results_table(studio)
        return gr.update(label=label_a), gr.update(label=label_b), state, message, table, note

    for (key, _text), button in zip(VOTES, vote_buttons):
        button.click(_vote_handler(vote, key), [chat_a, chat_b, battle, voter, *settings_inputs],
                     [chat_a, chat_b, battle, vote_message, results, results_note]).then(on_score, score_io, scores)

    def on_export(name):
        """The message, and the dataset made (or found), which the Data tab then shows."""
        try:
            row = chat_service.export_votes(studio, name or None)
        except DataError as err:
            return f"**Nothing exported:** {quoted(err)}", None
        if row["exported_before"]:  # the catalogue keeps one dataset per file: the name is the first export's
            return (f"{made_or_found(row, name, 'votes')} (`{row['id']}`): {row['rows']} preference pairs in the "
                    f"Data tab, ready for preference training. Vote more for a new dataset.{cut_chosen_note(row)}",
                    row["id"])
        return (f"Exported **{literal(row['name'])}** (`{row['id']}`): {row['rows']} preference pairs, now in the "
                f"Data tab, ready for preference training.{cut_chosen_note(row)}", row["id"])

    export_made = gr.State(None)
    exported = export.click(on_export, export_name, [export_message, export_made])

    suggested.input(lambda text: text or gr.skip(), suggested, prompt)

    # a question typed or pasted over the picked one is the person's own: the picker no longer names it. On
    # each change (a paste is no input event to Gradio), in the browser (no trip to the server per keystroke).
    # An emptied box, as Send leaves it, keeps the pick: it names what was just asked, and *Next prompt* goes on
    # from it
    prompt.change(None, [prompt, suggested], suggested, queue=False, show_progress="hidden",
                  js="(text, picked) => ((text || '').trim() && picked && (text || '').trim() !== picked.trim()) "
                     "? null : picked")

    def offered(src, spec_a, spec_b, run_id) -> tuple[list[str], bool]:
        """(the prompts to compare on, whether they are held-out ones): the source picked, else the
        held-out rows of the tuned model's dataset, else the votes'."""
        if run_id and f"run:{run_id}" not in (spec_a, spec_b):  # a comparison's run, no longer on either side
            run_id = None
        run_id = run_id or next((spec[4:] for spec in (spec_a, spec_b) if spec and spec.startswith("run:")), None)
        found = chat_service.prompt_suggestions(studio, src, run_id) if src != "own" else []
        heldout = bool(found) and src == "heldout"
        if not found and run_id:
            found = chat_service.prompt_suggestions(studio, "heldout", run_id)
            heldout = bool(found)
        if not found:  # (less those the tuned model trained on)
            found = chat_service.prompt_suggestions(studio, "votes", run_id)
        return found, heldout

    def on_open(current, src, spec_a, spec_b, run_id):
        """The list filled as it opens (it was empty until *Next prompt*, which fills it for the pair then);
        the pick stays while it is still offered. Not at each pick of a model: a run's held-out prompts
        are read from its whole dataset."""
        found = offered(src, spec_a, spec_b, run_id)[0]
        return gr.update(choices=found, value=current if current in found else None)

    open_io = [suggested, source, model_a, model_b, compare_run]
    prompts_box.expand(on_open, open_io, suggested, show_progress="hidden")

    def on_next(current, src, spec_a, spec_b, run_id):
        """The next prompt not yet voted on between the two models: from the held-out rows of the tuned
        model's dataset, else the votes'. When each has a vote, it says so instead of asking one again."""
        found, heldout = offered(src, spec_a, spec_b, run_id)
        if not found:
            return gr.skip(), gr.skip(), "No prompts to offer: type your own question and press *Send*."
        voted = chat_service.voted_prompts(studio, spec_a, spec_b) if spec_a and spec_b else set()
        after = found.index(current) + 1 if current in found else 0
        following = next((p for p in found[after:] + found[:after] if p not in voted), None)
        if following is None:
            what = "held-out prompt" if heldout else "prompt offered"
            which = f"The only {what}" if len(found) == 1 else f"Each of the {len(found)} {what.replace('prompt', 'prompts')}"
            return (gr.update(choices=found), gr.skip(),
                    f"{which} has a vote between these two models. Type your own question to go on"
                    + (" (the prompts it trained on would favour the tuned model)." if heldout else "."))
        return gr.update(choices=found, value=following), following, gr.skip()

    next_prompt.click(on_next, open_io, [suggested, prompt, vote_message])

    def refresh(spec_a=None, spec_b=None, kept=None):
        """New runs become choosable; while no real pair is picked (a model against itself, or no
        tuned model on either side) the newest tuned model against its base is put up. `kept`: the pair
        this browser last had (a reload), put up over the page's own while both can still be chatted with."""
        options = chat_service.choices(studio)
        table, note = results_table(studio)
        picked = bool(spec_a and spec_b) and spec_a != spec_b
        first, second = (spec_a, spec_b) if picked else chat_service.default_pair(studio)
        first, second = kept_pair(studio, kept, options) or (first, second)
        scorers = gr.update(choices=chat_service.scorer_choices(studio))
        if (first, second) == (spec_a, spec_b):
            # nothing to change: no value sent, so a pick made while this was on its way stays
            return gr.update(choices=options), gr.update(choices=options), table, note, scorers
        return (gr.update(choices=options, value=first), gr.update(choices=options, value=second), table, note,
                scorers)

    loop = {"train_prefs": train_prefs, "message": export_message, "model_a": model_a, "model_b": model_b,
            "blind": blind, "source": source, "suggested": suggested, "prompt": prompt, "compare_run": compare_run,
            "prompts_box": prompts_box, "battle": battle, "chat_a": chat_a, "chat_b": chat_b,
            "vote_message": vote_message}
    loop["scorer"], loop["scores"] = scorer, scores
    loop["voter"], loop["export_name"] = voter, export_name
    loop["generation"] = [system_prompt, temperature, top_p, max_new_tokens, repetition_penalty, seed]
    # for a handler that sets both pickers (Compare with the previous model, Chat with this run): chained after
    # it, the note and the vote buttons for the pair it set, in the pair's queue after the changes it fired
    # what a handler that starts another round stops: the events, and (end_stream(request)) their next updates
    loop["end_stream"] = streaming.end
    loop["pair_settled"] = dict(fn=pair_settled, inputs=[model_a, model_b], outputs=[same_note, *vote_buttons],
                                concurrency_limit=1, concurrency_id="chat-pair", show_progress="hidden")
    return refresh, [model_a, model_b, results, results_note, scorer], (exported, export_made), loop
