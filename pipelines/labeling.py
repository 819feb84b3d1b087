"""Human preference labeling: turning many people's labels into answers and into numbers that
say how far to trust them (plurality per item, agreement between labelers, position bias,
model win rates, labeler pace). Pure functions over plain dicts; no Gradio, no SQL.

A label is a dict: item_id, labeler, choice ("a" | "b" | "tie" | "both_bad" | "skip"),
flipped, model_a, model_b, seconds. The choice is canonical: "a" means the item's answer_a
is better, whichever side of the screen it was shown on; flipped says answer_a was on the
right for this labeler.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import Counter, defaultdict
from itertools import combinations

from pipelines import arena

CHOICES = ("a", "b", "tie", "both_bad")
SKIP = "skip"


def _decided(labels: list[dict]) -> list[dict]:
    """The labels that say something about the answers (skips dropped), checked on the way."""
    out = []
    for label in labels:
        choice = label["choice"]
        if choice == SKIP:
            continue
        if choice not in CHOICES:
            raise ValueError(f"Label for item {label['item_id']} by {label['labeler']!r} has "
                             f"choice {choice!r}; expected one of {', '.join(CHOICES)} or {SKIP}.")
        out.append(label)
    return out


def _ratings(labels: list[dict]) -> dict[int, dict[str, str]]:
    """item_id -> {labeler: choice}. One vote per labeler per item (the last one given wins),
    so a labeler who changed their mind is not counted twice."""
    ratings: dict[int, dict[str, str]] = defaultdict(dict)
    for label in _decided(labels):
        ratings[label["item_id"]][label["labeler"]] = label["choice"]
    return ratings


def _counts(choices) -> dict[str, int]:
    # All four choices, always in the same order, so tables get steady columns.
    counter = Counter(choices)
    return {c: counter[c] for c in CHOICES}


def aggregate(labels: list[dict], min_agreement: float = 0.0) -> dict[int, dict]:
    """Per item: the winning choice, the share of labelers who picked it, and the vote counts.
    The winner needs a majority: more than half of the item's labels (2 of 3; 1 of 1; not 2 of 4,
    even when no other choice has as many); otherwise, or below min_agreement, no winner (None).
    An item labelled by one person has no agreement to measure (None): any min_agreement above 0
    leaves it without a winner (it read 100% and passed every bar)."""
    out = {}
    for item_id, by_labeler in sorted(_ratings(labels).items()):
        counts = _counts(by_labeler.values())
        ranked = sorted(counts.values(), reverse=True)
        top = ranked[0]
        agreement = top / len(by_labeler) if len(by_labeler) > 1 else None
        winner = max(counts, key=counts.get) if 2 * top > len(by_labeler) else None
        if min_agreement > 0 and (agreement is None or agreement < min_agreement):
            winner = None
        out[item_id] = {"winner": winner, "agreement": agreement, "labels": len(by_labeler),
                        "counts": counts}
    return out


def _kappa(x: list[str], y: list[str]) -> float | None:
    from sklearn.metrics import cohen_kappa_score  # imported here: sklearn is slow to import

    if len(x) < 2:
        return None
    # When both labelers used one same category, kappa is 0/0: sklearn warns and says nan.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kappa = float(cohen_kappa_score(x, y, labels=list(CHOICES)))
    return None if math.isnan(kappa) else kappa


def _alpha(ratings: dict[int, dict[str, str]]) -> float | None:
    import krippendorff  # imported here, next to its only use
    import numpy as np

    if not ratings:
        return None
    labelers = sorted({name for by_labeler in ratings.values() for name in by_labeler})
    items = sorted(ratings)
    data = np.full((len(labelers), len(items)), np.nan)
    for j, item_id in enumerate(items):
        for name, choice in ratings[item_id].items():
            data[labelers.index(name), j] = CHOICES.index(choice)
    # One category only: krippendorff raises ValueError ("more than one value in the domain");
    # a 0/0 in other corner cases comes back as nan with a RuntimeWarning. Both mean undefined.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            alpha = float(krippendorff.alpha(reliability_data=data,
                                             level_of_measurement="nominal"))
    except (ValueError, ZeroDivisionError):
        return None
    return None if math.isnan(alpha) else alpha


def agreement(labels: list[dict]) -> dict:
    """How much labelers agree beyond chance: Cohen's kappa for each pair of labelers over the
    items both labeled (with the raw share of identical choices beside it), and Krippendorff's
    alpha over every item labeled by two or more people (it copes with missing labels).
    1 = perfect agreement, 0 = no better than chance; None where the number is undefined."""
    ratings = _ratings(labels)
    shared_items = {i: r for i, r in ratings.items() if len(r) >= 2}
    labelers = sorted({name for r in ratings.values() for name in r})
    pairs = []
    for x, y in combinations(labelers, 2):
        both = [r for _, r in sorted(shared_items.items()) if x in r and y in r]
        if not both:
            continue
        xs, ys = [r[x] for r in both], [r[y] for r in both]
        pairs.append({"labelers": (x, y), "items": len(both), "kappa": _kappa(xs, ys),
                      "observed": sum(a == b for a, b in zip(xs, ys)) / len(both)})
    return {"pairs": pairs, "alpha": _alpha(shared_items), "items": len(shared_items)}


def disagreements(labels: list[dict]) -> list[dict]:
    """Items labeled by two or more people who did not all choose the same, for review."""
    out = []
    for item_id, by_labeler in sorted(_ratings(labels).items()):
        if len(by_labeler) >= 2 and len(set(by_labeler.values())) > 1:
            out.append({"item_id": item_id, "counts": _counts(by_labeler.values()),
                        "labelers": dict(sorted(by_labeler.items()))})
    return out


POSITION_MIN_LABELS = 10  # decisive labels before the position check tests anything


def position_bias(labels: list[dict], min_labels: int = POSITION_MIN_LABELS, alpha: float = 0.05) -> dict:
    """How often labelers picked the left vs the right answer on the screen, and a warning when
    one side wins more often than a fair coin explains (two-sided exact binomial test).
    Only decisive labels ("a"/"b") count; below min_labels there is no test."""
    left = right = 0
    for label in _decided(labels):
        if label["choice"] not in ("a", "b"):
            continue
        # answer_a sits on the left unless flipped, so "a" is the left side exactly when not
        # flipped, and "b" is the left side exactly when flipped.
        if (label["choice"] == "a") != bool(label["flipped"]):
            left += 1
        else:
            right += 1
    n = left + right
    if n < min_labels:
        return {"left": left, "right": right, "p": None, "warning": None}
    p = arena._binomial_two_sided(left, n)
    warning = None
    if p < alpha:
        side, wins = ("left", left) if left > right else ("right", right)
        warning = (f"Labelers chose the {side} answer {wins} of {n} times (p = {p:.3f} if "
                   "position did not matter): the side may be swaying them.")
    return {"left": left, "right": right, "p": p, "warning": warning}


def win_rates(labels: list[dict]) -> list[dict]:
    """Each label as a vote between the two models that wrote the answers (see pipelines.arena.win_rates;
    pairs of one model with itself are left out there), with the win rate and its 95% interval taken
    over items: the labels of one item are not independent (two labelers read the same two answers), so
    counting each as a vote made the interval too narrow by about the square root of the overlap, and
    "better" came after 3 items labelled twice. Each item scores the mean of its labels; "items" is their
    number (what a verdict counts)."""
    votes = [{"model_a": label["model_a"], "model_b": label["model_b"], "winner": label["choice"],
              "item": label["item_id"]} for label in _decided(labels)]
    return arena.win_rates(votes, per="item")


def labeler_stats(labels: list[dict]) -> list[dict]:
    """Per labeler, in name order: labels given (skips apart) and the median seconds per item
    (skips included: they take time too)."""
    by_labeler: dict[str, list[dict]] = defaultdict(list)
    for label in labels:
        by_labeler[label["labeler"]].append(label)
    out = []
    for name, own in sorted(by_labeler.items()):
        skips = sum(label["choice"] == SKIP for label in own)
        seconds = [label["seconds"] for label in own if label.get("seconds") is not None]
        out.append({"labeler": name, "labels": len(_decided(own)), "skips": skips,
                    "median_s": statistics.median(seconds) if seconds else None})
    return out
