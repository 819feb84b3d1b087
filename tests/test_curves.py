"""Reading metrics for people: progress/ETA and the overfitting warning."""

from __future__ import annotations

import pytest

from pipelines.curves import format_duration, overfitting_warning, progress, series


def test_series_keeps_only_present_metrics():
    metrics = [{"step": 1, "loss": 2.0, "time": 0}, {"step": 1, "eval_loss": 2.5}, {"step": 2, "loss": 1.5}]
    assert series(metrics) == {"loss": ([1, 2], [2.0, 1.5]), "eval_loss": ([1], [2.5])}


def test_progress_eta_from_recent_step_times():
    metrics = [{"step": i, "loss": 1.0, "time": 100.0 + 2 * i} for i in range(1, 11)]
    p = progress(step=10, max_steps=40, started=90.0, metrics=metrics, now=120.0)
    assert (p["percent"], p["elapsed_s"], p["eta_s"]) == (25.0, 30.0, 60.0)
    assert format_duration(p["eta_s"]) == "1:00" and format_duration(3725) == "1:02:05"


def test_the_first_steps_wait_counts_down_between_steps():
    """Before three steps give a median, the time per step is that of the steps done: the wait counts down
    until the next step (measured up to now, it rose every second until the next step came, then fell)."""
    one = [{"step": 1, "loss": 2.0, "time": 110.0}]  # training began at 100: 10 s a step, 39 left
    waits = [progress(1, 40, 90.0, one, now=now, training_since=100.0)["eta_s"] for now in (110.0, 115.0, 125.0)]
    assert waits == [390.0, 385.0, 380.0]  # (not below the 38 steps after the one under way)
    assert progress(1, 40, 90.0, [], now=115.0, training_since=100.0)["eta_s"] == 39 * 15.0  # no time logged


def test_a_resumed_runs_wait_leaves_out_the_time_it_was_stopped():
    """Cancelled at step 2, resumed an hour later: the first step after it took the median of two gaps, one of
    them the hour, and the wait read 48 hours for a run of 16 minutes."""
    before = [{"step": s, "loss": 1.0, "time": 100.0 + 10 * s} for s in (1, 2)]
    after = [{"step": 3, "loss": 1.0, "time": 3730.0}]  # resumed at 3720 (first_step 2), 10 s a step
    p = progress(3, 100, 90.0, before + after, now=3730.0, training_since=3720.0, first_step=2)
    assert p["eta_s"] == 97 * 10.0
    more = after + [{"step": 4, "loss": 1.0, "time": 3740.0}, {"step": 5, "loss": 1.0, "time": 3750.0}]
    assert progress(5, 100, 90.0, before + more, now=3750.0, training_since=3720.0, first_step=2)["eta_s"] == 950.0


def test_warns_when_held_out_loss_rises_while_training_loss_falls():
    metrics = []
    for step in range(1, 31):
        metrics.append({"step": step, "loss": 2.0 - step * 0.05})
        if step % 10 == 0:
            metrics.append({"step": step, "eval_loss": {10: 1.0, 20: 1.1, 30: 1.3}[step]})
    assert overfitting_warning([{"step": 0, "eval_loss": 1.2}] + metrics[:0]) is None
    warning = overfitting_warning(metrics)
    assert warning.startswith("Held-out loss has risen for two checks in a row (1.000 -> 1.300)")


def test_no_warning_while_both_fall():
    metrics = [{"step": s, "loss": 2.0 - s * 0.05} for s in range(1, 31)]
    metrics += [{"step": s, "eval_loss": 2.0 - s * 0.01} for s in (10, 20, 30)]
    assert overfitting_warning(metrics) is None


def test_rl_and_reward_model_runs_get_their_own_panels():
    from components.charts import curves_figure

    rl = [{"step": s, "loss": 0.1, "reward": 0.2 * s, "rewards/number/mean": 0.1 * s, "rewards/regex/mean": 0.3,
           "kl": 0.01 * s, "completions/mean_length": 30.0} for s in (1, 2, 3)]
    fig = curves_figure({"r1": rl})
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Mean reward (and each function's part)", "KL from the start (how far the model moved)",
                      "Reply length (tokens)", "Loss"]
    assert [t.name for t in fig.data] == ["weighted reward", "number", "regex", "KL from the start",
                                          "mean reply length", "training loss"]
    # with the run's reward functions: named as the form names them, each its weighted part, which
    # together make the reward
    parts = {"r1": {"number": ("The number is right", 2.0), "regex": ("Matches a format", 1.0)}}
    fig = curves_figure({"r1": rl}, parts)
    lines = {t.name: list(t.y) for t in fig.data}
    assert lines["The number is right ×2"] == pytest.approx([0.2, 0.4, 0.6])
    assert lines["Matches a format ×1"] == pytest.approx([0.3] * 3)
    rm = [{"step": 1, "loss": 0.7, "accuracy": 0.5, "margin": 0.0}, {"step": 2, "eval_accuracy": 0.9, "eval_loss": 0.3}]
    titles = [a.text for a in curves_figure({"r2": rm}).layout.annotations]
    assert titles[1] == "Pairs ranked right (preferred scored higher)"


def test_one_runs_series_each_have_a_colour_named_once_in_the_legend():
    from components.charts import KTO_KL, curves_figure

    dpo = [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracies": 0.5, "rewards/margins": 0.1 * s,
            "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s} for s in (1, 2)]
    dpo.append({"step": 2, "eval_loss": 0.5, "eval_rewards/accuracies": 1.0, "eval_rewards/margins": 0.3,
                "eval_rewards/chosen": -0.09, "eval_rewards/rejected": -2.05})
    fig = curves_figure({"r1": dpo})
    # DPO logs no KL: the panel does not promise one
    assert [a.text for a in fig.layout.annotations][3] == "Rewards of preferred and rejected answers"
    colour = {t.name: t.line.color for t in fig.data}
    assert colour["training pairs"] != colour["held-out pairs"] and colour["preferred"] != colour["rejected"]
    # the accuracy and the margin panels share their two legend entries, each shown once
    pairs = [t for t in fig.data if t.name == "training pairs"]
    assert len(pairs) == 2 and {t.line.color for t in pairs} == {colour["training pairs"]}
    assert [t.showlegend for t in pairs] == [True, False]
    assert sorted(t.name for t in fig.data if t.showlegend) == [
        "held-out loss", "held-out pairs", "preferred", "preferred, held-out", "rejected", "rejected, held-out",
        "training loss", "training pairs"]
    assert len(set(colour.values())) == len(colour)  # every series its own colour
    # the held-out rewards are drawn beside the training ones (a short run showed only its training point)
    held = next(t for t in fig.data if t.name == "rejected, held-out")
    assert list(held.y) == [-2.05] and held.xaxis == "x4"
    # two runs: a colour per run, the held-out series dotted
    two = curves_figure({"r1": dpo, "r2": dpo})
    by_name = {f"{t.legendgroup} {t.name}": t.line for t in two.data}  # a legend group per run
    assert by_name["r1 training loss"].color != by_name["r2 training loss"].color
    assert by_name["r1 held-out loss"].dash == "dot" and by_name["r1 training loss"].dash == "solid"
    kto = [{"step": 1, "loss": 0.5, "rewards/chosen": 0.1, "rewards/rejected": -0.1, "kl": 0.2}]
    assert [a.text for a in curves_figure({"r3": kto}).layout.annotations][3] == KTO_KL


def test_a_short_run_is_drawn_on_whole_steps():
    """A one-step DPO run's axis read 0, 0.5, 1, 1.5, 2: steps are whole, so a short run's ticks are too."""
    from components.charts import curves_figure

    one_step = [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.5}, {"step": 1, "eval_rewards/margins": -0.1}]
    layout = curves_figure({"r1": one_step}).layout
    assert all(layout[f"xaxis{n}"].dtick == 1 for n in ("", 2, 3, 4))
    long_run = [{"step": s, "loss": 1.0 / s} for s in range(1, 200)]
    assert curves_figure({"r1": long_run}).layout.xaxis.dtick is None  # plotly's own ticks: 0, 50, 100...


def test_warns_when_held_out_loss_ends_well_above_its_lowest():
    """An 8-epoch LoRA on 30 rows: held-out loss fell to 2.66 at step 12, then rose unevenly to 3.28
    while training loss fell. The last three checks never rose twice in a row, so no warning came and
    the finished run read as a success. It now names the best check and its epoch."""
    metrics = []
    held = {4: 3.1, 8: 2.8, 12: 2.66, 16: 2.9, 20: 2.85, 24: 3.1, 28: 3.05, 32: 3.28}
    for step in range(1, 33):
        metrics.append({"step": step, "epoch": step / 4, "loss": 3.0 - step * 0.08, "time": step})
        if step in held:
            metrics.append({"step": step, "epoch": step / 4, "eval_loss": held[step]})
    assert overfitting_warning(metrics) == (
        "Held-out loss was lowest at step 12 (epoch 3.0), 2.660, and is now 3.280 while training loss keeps "
        "falling: since then the model has been memorising your examples instead of learning from them. "
        "About 3.0 epochs, early stopping or a little dropout will help.")
    # a small rise over the lowest (under 5%), or the lowest at one of the last two checks: no warning
    flat = [m if m.get("step") != 32 or "eval_loss" not in m else {**m, "eval_loss": 2.75} for m in metrics]
    assert overfitting_warning(flat) is None
    dip = [m if "eval_loss" not in m else {**m, "eval_loss": 3.0 - m["step"] * 0.01} for m in metrics]
    assert overfitting_warning(dip) is None
    # a loss near zero (DPO on a few pairs): a rise of a rounding's worth is no warning
    tiny = [m if "eval_loss" not in m else {**m, "eval_loss": held[m["step"]] / 1000} for m in metrics]
    assert overfitting_warning(tiny) is None


def test_a_finished_run_says_where_held_out_loss_was_lowest():
    from components.runs_panel import heldout_loss_line

    summary = {"eval_loss_before": 4.468, "eval_loss_after": 3.277}
    metrics = [{"step": s, "eval_loss": v} for s, v in ((0, 4.468), (12, 2.66), (32, 3.277))]
    assert heldout_loss_line(summary, metrics) == ("Held-out loss: 4.468 before, 3.277 after (lower is better); "
                                                   "it was lowest at step 12, 2.660")
    assert heldout_loss_line(summary, metrics[:1] + metrics[2:]).endswith("after (lower is better)")
    # a fall to a fraction read as near-perfect answers, beside wrong facts in Chat (a walkthrough's run)
    fell = {"eval_loss_before": 2.815, "eval_loss_after": 0.221}
    assert heldout_loss_line(fell, [{"step": 0, "eval_loss": 2.815}, {"step": 42, "eval_loss": 0.221}]) == (
        "Held-out loss: 2.815 before, 0.221 after (lower is better). It averages every token of the held-out "
        "answers, mostly their wording: a fact in them can still come out wrong, which asking it in Chat shows.")
    # a preference run's is the pairs' loss: nothing of answers' wording (said of a DPO run's one held-out pair)
    assert heldout_loss_line({"eval_loss_before": 0.75, "eval_loss_after": 0.023}, [], "preference") == (
        "Held-out preference loss: 0.750 before, 0.023 after (lower is better)")
    # one that adds the imitation of the preferred answers says so: a walkthrough's DPO run read 4.4 falling to 2.3
    # in training beside a flat 0.9 held out as "held-out much better" (its one held-out pair's preferred answer was
    # one the model already wrote); the loss panel names both parts
    from components.charts import curves_figure
    from components.runs_panel import IMITATION_NOTE, loss_objective

    assert heldout_loss_line({"eval_loss_before": 0.896, "eval_loss_after": 0.938}, [], "preference", 1.0) == (
        "Held-out loss (preference + imitation of the preferred answers): 0.896 before, 0.938 after (lower is "
        "better)." + IMITATION_NOTE)
    assert loss_objective({"method": "dpo", "params": {}}) == "DPO loss + imitation ×1"  # (its default weight)
    assert loss_objective({"method": "dpo", "params": {"sft_weight": 0.0}}) == "DPO loss"
    dpo = [{"step": 1, "loss": 4.437, "rewards/accuracies": 0.0, "rewards/margins": 0.0},
           {"step": 2, "eval_loss": 0.901, "eval_rewards/accuracies": 1.0}]
    titles = [a.text for a in curves_figure({"r1": dpo}, None, {"r1": "DPO loss + imitation ×1"}).layout.annotations]
    assert titles[0] == "Loss: DPO + imitation ×1 (training and held-out)"
    assert [a.text for a in curves_figure({"r1": dpo}).layout.annotations][0] == "Loss (training and held-out)"


def test_a_kto_run_draws_good_and_bad_replies_not_an_empty_accuracy_panel():
    """KTO has no pairs, so TRL logs no accuracy for it: its charts showed an empty "Preference accuracy"
    panel. They now show what it logs: the rewards of replies marked good and bad, their gap, the KL."""
    from components.charts import curves_figure

    kto = [{"step": s, "loss": 0.5 - 0.1 * s, "rewards/chosen": 0.1 * s, "rewards/rejected": -0.1 * s,
            "rewards/margins": 0.2 * s, "kl": 0.01 * s} for s in (1, 2, 3)]
    kto.append({"step": 3, "eval_loss": 0.3, "eval_rewards/chosen": 0.2, "eval_rewards/rejected": -0.2,
                "eval_rewards/margins": 0.4})
    fig = curves_figure({"k1": kto})
    assert [a.text for a in fig.layout.annotations] == [
        "Loss (training and held-out)", "Rewards of replies marked good and bad", "Reward margin (good minus bad)",
        "KTO's KL baseline (0: replies to other prompts no likelier than at the start)"]
    assert [t.name for t in fig.data] == ["training loss", "held-out loss", "marked good", "marked bad",
                                          "marked good, held-out", "marked bad, held-out", "training replies",
                                          "held-out replies", "KL baseline"]
    assert all(len(t.x) for t in fig.data)  # no panel without a line
    dpo = [{**m, "rewards/accuracies": 0.5} for m in kto if "loss" in m]
    assert [a.text for a in curves_figure({"d1": dpo}).layout.annotations][1] == (
        "Preference accuracy (preferred scored higher)")


def test_early_stopping_lines_tell_a_kept_check_from_a_run_stopped_early(studio):
    """A run with early stopping on that reached its last step, its best check earlier, kept that
    check but did not stop early; a method that cannot load a check back stopped early and kept its
    last weights: each reads as what happened (both were 'stopped early' or '29%' before)."""
    from components.runs_panel import progress_html, status_markdown

    row = {"id": "r1", "status": "completed", "error": None, "parent_id": None, "model": "default",
           "dataset_id": None, "step": 21, "max_steps": 21, "started": 0.0, "finished": 30.0}
    metrics = [{"step": s, "eval_loss": v, "time": float(s)} for s, v in ((0, 3.0), (7, 2.0), (14, 2.5), (21, 2.6))]
    full = {**row, "summary": {"steps": 21, "kept_step": 7, "eval_loss_before": 3.0, "eval_loss_after": 2.0}}
    shown = status_markdown(studio, full, metrics)
    assert ("the result is the weights of step 7, where the held-out loss was lowest; training went on to step 21 "
            "without beating it, its last step.") in shown
    assert "stopped early" not in progress_html(full, metrics) and "step 21 of 21" in progress_html(full, metrics)
    margin = {**full, "summary": {**full["summary"], "watched": "held-out reward margin", "best": "highest"}}
    assert "the weights of step 7, where the held-out reward margin was highest; training went on to step 21" in (
        status_markdown(studio, margin, metrics))
    stopped = {**row, "step": 6, "summary": {"steps": 6, "stopped_early": True}}
    bar = progress_html(stopped, metrics)
    assert "stopped early at step 6 of 21: the held-out loss had stopped improving" in bar and "width:100.0%" in bar
    margin = {**stopped, "summary": {**stopped["summary"], "watched": "held-out reward margin"}}
    assert "stopped early at step 6 of 21: the held-out reward margin had stopped improving" in progress_html(
        margin, metrics)
    assert "the result is the weights" not in status_markdown(studio, stopped, metrics)


def test_a_dpo_runs_level_start_is_no_point_on_the_accuracy_chart():
    """DPO's first held-out check scores every pair level (the model is its own reference): TRL logs
    accuracy 0 there, and the chart drew "0% ranked right" where the summary says no preference yet."""
    from components.charts import curves_figure

    dpo = [{"step": 0, "eval_loss": 0.693, "eval_rewards/accuracies": 0.0, "eval_rewards/margins": 0.0},
           {"step": 2, "loss": 0.6, "rewards/accuracies": 0.0, "rewards/margins": -0.01, "rewards/chosen": 0.0},
           {"step": 4, "eval_loss": 0.5, "eval_rewards/accuracies": 0.75, "eval_rewards/margins": 0.3}]
    traces = [(t.name, list(t.x), list(t.y)) for t in curves_figure({"d1": dpo}).data]
    accuracy, margins = [t[1:] for t in traces if t[0] == "held-out pairs"]  # the panels' order
    assert accuracy == ([4], [0.75]) and margins == ([0, 4], [0.0, 0.3])
    assert [t[1:] for t in traces if t[0] == "training pairs"][0] == ([2], [0.0])  # a margin not 0: ranked wrong
    # at its start every point is level (the check before training, and step 1 measured before the first
    # update): still DPO's panels, its accuracy panel empty until a pair is ranked either way
    start = [dpo[0], {"step": 1, "loss": 0.693, "rewards/accuracies": 0.0, "rewards/margins": 0.0,
                      "rewards/chosen": 0.0}]
    titles = [a.text for a in curves_figure({"d1": start}).layout.annotations]
    assert titles[1] == "Preference accuracy (preferred scored higher)"


def test_a_share_of_pairs_is_drawn_from_0_to_100_percent():
    """Every pair ranked right (1.0 at each point): the accuracy panel's axis ran to 2, for a share the
    summary calls 100%."""
    from components.charts import curves_figure

    dpo = [{"step": 1, "loss": 0.6, "rewards/accuracies": 1.0, "rewards/margins": 0.2, "rewards/chosen": 0.1},
           {"step": 2, "eval_loss": 0.5, "eval_rewards/accuracies": 1.0, "eval_rewards/margins": 0.3}]
    layout = curves_figure({"d1": dpo}).layout
    assert (list(layout.yaxis2.range), layout.yaxis2.tickformat) == ([-0.03, 1.03], ".0%")  # accuracy: top right
    assert layout.yaxis.range is None and layout.yaxis3.range is None  # losses and margins keep their own


def test_the_learning_rate_is_drawn_as_the_form_writes_it():
    """The learning rate's ticks read "100μ" and "50μ" (plotly's SI suffixes): the form says 1e-4."""
    from components.charts import curves_figure

    lora = [{"step": 1, "loss": 2.0, "learning_rate": 1e-4}, {"step": 2, "loss": 1.8, "learning_rate": 5e-5}]
    layout = curves_figure({"r1": lora}).layout
    assert layout.yaxis2.tickformat == "~e" and layout.yaxis.tickformat is None  # the loss keeps its own


def test_the_overfitting_warning_says_how_few_rows_it_rests_on(studio):
    """20 rows at the default 0.1 hold out 2: their loss rising over two checks is a weak sign, said so (a
    newcomer's first run on defaults was told it memorised, on 2 rows)."""
    from components.runs_panel import status_markdown
    from pipelines.events import HELDOUT_ROWS, write_json

    row = {"id": "r1", "status": "completed", "error": None, "parent_id": None, "model": "default",
           "dataset_id": None, "summary": {}}
    metrics = [{"step": s, "loss": 2.0 - s * 0.05} for s in range(1, 31)]
    metrics += [{"step": s, "eval_loss": v} for s, v in ((10, 1.0), (20, 1.1), (30, 1.3))]
    studio.run_dir("r1").mkdir()
    write_json(studio.run_dir("r1") / HELDOUT_ROWS, {"rows": 20, "heldout": [3, 17]})
    caveat = ("(Measured on only 2 held-out rows: a rough sign on so few; a larger held-out fraction or more data "
              "measures it better.)")
    shown = status_markdown(studio, row, metrics)
    assert "⚠️ Held-out loss has risen for two checks in a row" in shown and caveat in shown
    write_json(studio.run_dir("r1") / HELDOUT_ROWS, {"rows": 200, "heldout": list(range(20))})
    shown = status_markdown(studio, row, metrics)
    assert "⚠️ Held-out loss has risen" in shown and "Measured on only" not in shown
    # one held-out row (a few chat votes made into pairs): no warning to undo the epochs, a plain word instead
    write_json(studio.run_dir("r1") / HELDOUT_ROWS, {"rows": 6, "heldout": [4]})
    shown = status_markdown(studio, row, metrics)
    assert "⚠️" not in shown and "memorising your examples" not in shown
    assert "Held-out loss rose after its lowest check, on a single held-out row: too few to tell memorising from chance." in shown


def test_compared_runs_are_titled_by_what_sets_them_apart(studio):
    """The legend named the runs by id only: a walkthrough matched ids against the settings table to find
    which line was the batch-8 run. Each run's legend group is titled by its differing settings."""
    from components.runs_panel import run_titles, short_id

    dataset = studio.import_dataset(__import__("tests.conftest", fromlist=["FAQ"]).FAQ)
    for run_id, method, params in (("r20261205-141357-98ac", "lora", {"per_device_train_batch_size": 8,
                                                                      "num_train_epochs": 3}),
                                   ("r20261205-142011-1f2e", "lora", {"per_device_train_batch_size": 4,
                                                                      "num_train_epochs": 1}),
                                   ("same", "lora", {"per_device_train_batch_size": 4, "num_train_epochs": 1}),
                                   ("dora", "dora", {"per_device_train_batch_size": 4, "num_train_epochs": 1}),
                                   ("dpo", "dpo", {"per_device_train_batch_size": 4, "num_train_epochs": 1,
                                                   "beta": 0.1})):
        studio.store.add_run(id=run_id, method=method, model="default", dataset_id=dataset["id"],
                             status="completed", params=params)
    assert run_titles(studio, ["r20261205-141357-98ac", "r20261205-142011-1f2e"]) == {
        "r20261205-141357-98ac": "r…98ac: epochs 3, batch size 8",
        "r20261205-142011-1f2e": "r…1f2e: epochs 1, batch size 4"}
    assert run_titles(studio, ["same", "dora"]) == {"same": "same: LoRA", "dora": "dora: DoRA"}
    assert run_titles(studio, ["r20261205-142011-1f2e", "same"]) == {"r20261205-142011-1f2e": "r…1f2e",
                                                                      "same": "same"}
    # a setting one of them has not got is not named for it (a LoRA run read "beta (how far to move) -")
    titles = run_titles(studio, ["same", "dpo"])
    assert titles["same"] == "same: LoRA" and titles["dpo"].startswith("dpo: DPO, beta"), titles
    assert short_id("r-small-batch") == "r-small-batch"


def test_compared_runs_of_different_objectives_have_their_losses_named(studio):
    """An SFT run's loss (next-token cross-entropy, ~2) beside a DPO run's (0.69 at the start) is no
    comparison: each loss is named by what it measures, and the panel says so. Runs of one objective
    (two SFT methods) are drawn as before."""
    from components.charts import curves_figure
    from components.runs_panel import loss_objective

    dataset = studio.import_dataset(__import__("tests.conftest", fromlist=["FAQ"]).FAQ)
    for run_id, method, params in (("s1", "lora", {}), ("s2", "dora", {}), ("d1", "dpo", {"beta": 0.1, "sft_weight": 0.0}),
                                   ("d2", "dpo_full", {"loss_type": "ipo"}), ("k1", "kto", {})):
        studio.store.add_run(id=run_id, method=method, model="default", dataset_id=dataset["id"],
                             status="completed", params=params)
    objectives = {i: loss_objective(studio.get_run(i)) for i in ("s1", "s2", "d1", "d2", "k1")}
    assert objectives == {"s1": "next-token loss", "s2": "next-token loss", "d1": "DPO loss",
                          "d2": "DPO loss, ipo + imitation ×1", "k1": "KTO loss"}
    sft = [{"step": 1, "loss": 2.1}, {"step": 1, "eval_loss": 2.3}]
    dpo = [{"step": 1, "loss": 0.69, "rewards/accuracies": 0.5, "rewards/margins": 0.1}]
    fig = curves_figure({"s1": sft, "d1": dpo}, None, objectives)
    assert [f"{t.legendgroup} {t.name}" for t in fig.data if t.xaxis == "x"] == [
        "s1 training loss (next-token loss)", "s1 held-out loss (next-token loss)", "d1 training loss (DPO loss)"]
    assert fig.layout.annotations[0].text == "Loss: next-token vs DPO, not one scale"
    same = curves_figure({"s1": sft, "s2": sft}, None, objectives)
    assert [f"{t.legendgroup} {t.name}" for t in same.data if t.xaxis == "x"] == [
        "s1 training loss", "s1 held-out loss", "s2 training loss", "s2 held-out loss"]
    assert same.layout.annotations[0].text == "Loss (training and held-out)"


def test_runs_of_different_steps_per_epoch_are_compared_by_epoch():
    """Batch 4 against batch 8 on one dataset: step 10 is the end of one's first epoch and half of the
    other's, and on one step axis the faster-stepping run looked twice as long. By epoch they line up;
    runs of equal steps per epoch stay on steps; a run that logged no epoch keeps all on steps."""
    from components.charts import best_axis, curves_figure

    small = [{"step": s, "epoch": round(s / 10, 4), "loss": 2.0 - s / 20} for s in range(1, 21)]  # 10 steps/epoch
    big = [{"step": s, "epoch": round(s / 5, 4), "loss": 2.0 - s / 10} for s in range(1, 11)]  # 5 steps/epoch
    assert best_axis({"r1": small, "r2": big}) == "epoch"
    assert best_axis({"r1": small, "r3": small}) == "step"
    assert best_axis({"r1": small}) == "step"
    fig = curves_figure({"r1": small, "r2": big}, along="epoch", run_names={"r1": "r1: batch size 4",
                                                                             "r2": "r2: batch size 8"})
    lines = {f"{t.legendgrouptitle.text} {t.name}": list(t.x) for t in fig.data if t.xaxis == "x"}
    assert lines["r1: batch size 4 training loss"][-1] == lines["r2: batch size 8 training loss"][-1] == 2.0
    assert lines["r1: batch size 4 training loss"][9] == lines["r2: batch size 8 training loss"][4] == 1.0
    assert fig.layout.xaxis3.title.text == "epoch"
    no_epoch = [{"step": s, "loss": 1.0} for s in range(1, 4)]
    assert best_axis({"r1": small, "r4": no_epoch}) == "step"
    fallback = curves_figure({"r1": small, "r4": no_epoch}, along="epoch")
    assert fallback.layout.xaxis3.title.text == "step"
    assert [list(t.x) for t in fallback.data if (t.legendgroup, t.name) == ("r4", "training loss")] == [[1, 2, 3]]


def test_a_histogram_of_short_rows_is_drawn_on_their_own_scale():
    """Rows of 20-90 tokens under a max length of 512: the axis ran to 512 and every bar sat in the leftmost
    pixels. Far under it, the axis ends near the longest row and the max length is said at its edge; near it,
    the max length is drawn as a line where cutting starts."""
    from components.charts import length_histogram

    short = length_histogram([20, 40, 90], 512)
    assert short.layout.xaxis.range[1] < 100 and not short.layout.shapes
    assert [a.text for a in short.layout.annotations] == ["max length 512 →"]
    near = length_histogram([200, 400, 900], 512)
    assert near.layout.xaxis.range is None and near.layout.shapes[0].x0 == 512
    assert near.layout.title.text == "Tokens per example (1 of 3 over max length)"


def test_metrics_are_read_as_they_grow_and_again_whole_when_the_file_is_replaced(tmp_path):
    """The Train tab re-read a run's whole metrics file every two seconds (0.27 s for 30,000 steps): only what
    was added is parsed now, a line still being written waits for its end, and a file replaced or rewritten
    (a resume drops the steps it redoes) is read again whole."""
    from pipelines.events import METRICS, RunEvents, read_metrics, truncate_metrics

    events = RunEvents(tmp_path)
    for step in (1, 2):
        events.metric({"step": step, "loss": 1.0 / step})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    with open(tmp_path / METRICS, "a") as fh:  # the worker mid-write
        fh.write('{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    with open(tmp_path / METRICS, "a") as fh:
        fh.write('ss": 0.3}\n')
    shown = read_metrics(tmp_path)
    assert [r["step"] for r in shown] == [1, 2, 3]
    shown[0]["step"] = 99  # a caller's change stays its own
    assert read_metrics(tmp_path)[0]["step"] == 1
    truncate_metrics(tmp_path, 2)  # a resume from step 2
    events.metric({"step": 3, "loss": 0.25})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    (tmp_path / METRICS).write_text('{"step": 7}\n{"step": 8, "loss": 0.125}\n')  # rewritten in place
    assert [r["step"] for r in read_metrics(tmp_path)] == [7, 8]
    with open(tmp_path / METRICS, "a") as fh:  # a line that is no record is passed over, now and later
        fh.write('5\n{"step": 9}\n')
    assert [r["step"] for r in read_metrics(tmp_path)] == [7, 8, 9]
    assert [r["step"] for r in read_metrics(tmp_path)] == [7, 8, 9]


def test_a_run_error_is_shown_as_written(studio):
    """A failure quotes log tails and exception text: `<module>` vanished as a tag, `__init__` came out bold."""
    from components.runs_panel import status_markdown

    row = {"id": "r1", "status": "failed", "parent_id": None, "model": "default", "dataset_id": None, "step": 0,
           "max_steps": 10, "started": 0.0, "finished": 1.0,
           "error": "ImportError: cannot import name 'x' from <module> (__init__.py) *here*"}
    shown = status_markdown(studio, row, [])
    assert ("Error: ImportError: cannot import name 'x' from \\<module\\> (\\_\\_init\\_\\_.py) \\*here\\*"
            in shown)


def test_the_epoch_is_logged_precisely_enough_for_large_datasets(tmp_path):
    """Rounded to 4 places, step 5 of a 30,000-step epoch logged epoch 0.0002 (25,000 steps an epoch): two runs
    alike differed by more than 5%, and Compare drew them along epochs, 11% apart."""
    from types import SimpleNamespace

    from components.charts import best_axis, steps_per_epoch
    from pipelines.callbacks import MetricsCallback
    from pipelines.events import RunEvents, read_metrics

    callback = MetricsCallback(RunEvents(tmp_path))
    state = SimpleNamespace(global_step=5, epoch=5 / 30_000, num_input_tokens_seen=0)
    callback.on_log(SimpleNamespace(device=SimpleNamespace(type="cuda")), state, None, logs={"loss": 2.0})
    (record,) = read_metrics(tmp_path)
    assert steps_per_epoch([record]) == pytest.approx(30_000, rel=1e-3)
    other = [{"step": 7, "epoch": 7 / 30_000, "loss": 2.0}]
    assert best_axis({"a": [record], "b": other}) == "step"


def test_a_long_runs_chart_draws_at_most_a_thousand_points_a_series_and_keeps_its_spike():
    """SFT logs every step: a 20,000-step run's chart was rebuilt and sent whole (1.9 MB, 2.5 s to draw in
    Chromium, bench/chart_points.py) each time it logged. Each series is thinned to the lowest and highest
    points of runs of steps, with its first and last, and drawn as a line."""
    from components.charts import curves_figure
    from pipelines.curves import DRAWN_POINTS, thinned

    steps = list(range(1, 20_001))
    values = [1.0 + (i % 7) / 100 for i in steps]
    values[12_345] = 9.0
    values[777] = -1.0
    kept_steps, kept = thinned(steps, values)
    assert len(kept_steps) <= DRAWN_POINTS and kept_steps == sorted(kept_steps)
    assert (kept_steps[0], kept_steps[-1]) == (1, 20_000) and 9.0 in kept and -1.0 in kept
    assert all(values[s - 1] == v for s, v in zip(kept_steps, kept))  # real points, not averages
    assert thinned(steps[:900], values[:900]) == (steps[:900], values[:900])
    # a NaN (a diverged step) opening a run of steps: that run's lowest and highest are still drawn, and one NaN
    nan_first = list(values)
    nan_first[0] = nan_first[4_000] = float("nan")
    nan_first[10] = 7.0
    kept_steps, kept = thinned(steps, nan_first)
    assert 7.0 in kept and 9.0 in kept and sum(v != v for v in kept) == 2

    run = [{"step": s, "loss": v, "learning_rate": 1e-4} for s, v in zip(steps, values)]
    run += [{"step": s, "eval_loss": 1.0} for s in range(500, 20_001, 500)]
    figure = curves_figure({"long": run})
    loss = next(t for t in figure.data if t.name == "training loss")
    assert len(loss.x) <= DRAWN_POINTS and max(loss.y) == 9.0 and loss.mode == "lines"
    held = next(t for t in figure.data if t.name == "held-out loss")
    assert len(held.x) == 40 and held.mode == "lines+markers"  # (a few checks keep their markers)
