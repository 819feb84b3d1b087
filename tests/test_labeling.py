"""Labeling statistics against fixtures worked out by hand (the arithmetic is in the comments),
not against the libraries themselves."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines import arena
from pipelines.labeling import (agreement, aggregate, disagreements, labeler_stats,
                                position_bias, win_rates)


def label(item_id, labeler, choice, flipped=False, model_a="base", model_b="tuned", seconds=None):
    return {"item_id": item_id, "labeler": labeler, "choice": choice, "flipped": flipped,
            "model_a": model_a, "model_b": model_b, "seconds": seconds}


def ratings(table: dict[int, dict[str, str]]) -> list[dict]:
    """{item_id: {labeler: choice}} -> labels."""
    return [label(i, who, choice) for i, row in table.items() for who, choice in row.items()]


# item 1: a a b            -> a wins, 2/3
# item 2: a b              -> top shared (1-1): no winner, 1/2
# item 3: tie (+ a skip)   -> tie wins, 1/1, the skip is not a label
# item 4: skip only        -> not an item at all
# item 5: a b both_bad x2  -> both_bad wins, 2/4
# item 6: b b              -> b wins, 2/2
VOTES = ratings({
    1: {"ann": "a", "ben": "a", "cat": "b"},
    2: {"ann": "a", "ben": "b"},
    3: {"ann": "tie", "ben": "skip"},
    4: {"cat": "skip"},
    5: {"ann": "a", "ben": "b", "cat": "both_bad", "dan": "both_bad"},
    6: {"ann": "b", "cat": "b"},
})


def counts(a=0, b=0, tie=0, both_bad=0):
    return {"a": a, "b": b, "tie": tie, "both_bad": both_bad}


def test_aggregate_majority_ties_and_skips():
    result = aggregate(VOTES)
    assert sorted(result) == [1, 2, 3, 5, 6]  # item 4 holds only a skip
    assert result[1] == {"winner": "a", "agreement": pytest.approx(2 / 3), "labels": 3,
                         "counts": counts(a=2, b=1)}
    assert result[2] == {"winner": None, "agreement": 0.5, "labels": 2, "counts": counts(a=1, b=1)}
    # one label: a winner by majority, and no agreement to measure
    assert result[3] == {"winner": "tie", "agreement": None, "labels": 1, "counts": counts(tie=1)}
    # 'both bad' has the most votes but only half of them: no majority, no winner
    assert result[5] == {"winner": None, "agreement": 0.5, "labels": 4,
                         "counts": counts(a=1, b=1, both_bad=2)}
    assert result[6]["winner"] == "b" and result[6]["agreement"] == 1.0


def test_aggregate_min_agreement_drops_weak_winners():
    # 0.6 keeps item 1 (2/3 = 0.667) and item 6 (1.0); item 5 (2/4 = 0.5) loses its winner but
    # stays listed with its counts, and item 3 (one label: no agreement to measure) loses its own.
    result = aggregate(VOTES, min_agreement=0.6)
    assert {i: r["winner"] for i, r in result.items()} == {1: "a", 2: None, 3: None,
                                                          5: None, 6: "b"}
    assert result[5]["counts"] == counts(a=1, b=1, both_bad=2)
    # Exactly at the threshold counts as enough: 2/3 >= 2/3.
    assert aggregate(VOTES, min_agreement=2 / 3)[1]["winner"] == "a"


def test_a_labeler_who_changes_their_mind_counts_once():
    labels = [label(1, "ann", "a"), label(1, "ann", "b"), label(1, "ben", "b")]
    assert aggregate(labels)[1] == {"winner": "b", "agreement": 1.0, "labels": 2,
                                    "counts": counts(b=2)}


def test_disagreements_lists_split_items_only():
    # Items 1, 2, 5 are split; 3 has one label; 6 is unanimous.
    result = disagreements(VOTES)
    assert [d["item_id"] for d in result] == [1, 2, 5]
    assert result[0] == {"item_id": 1, "counts": counts(a=2, b=1),
                         "labelers": {"ann": "a", "ben": "a", "cat": "b"}}
    assert result[2]["labelers"] == {"ann": "a", "ben": "b", "cat": "both_bad", "dan": "both_bad"}


def test_cohen_kappa_and_alpha_by_hand():
    # item:  1    2    3    4    5    6
    # ann:   a    a    b    b    tie  a
    # ben:   a    b    b    b    tie  b
    # Cohen's kappa:
    #   po = same on items 1, 3, 4, 5 = 4/6 = 2/3
    #   ann's marginals a 3, b 2, tie 1; ben's a 1, b 4, tie 1 (of 6)
    #   pe = (3*1 + 2*4 + 1*1) / 6^2 = 12/36 = 1/3
    #   kappa = (po - pe) / (1 - pe) = (1/3) / (2/3) = 0.5
    # Krippendorff's alpha (nominal), coincidence matrix o[c][k]: each item with two values
    # adds 1/(m-1) = 1 to (c,k) and to (k,c):
    #            a   b   tie | n_c
    #     a      2   2   0   |  4      (item 1 gives a-a twice; items 2 and 6 give a-b, b-a)
    #     b      2   4   0   |  6      (items 3, 4 give b-b twice each)
    #     tie    0   0   2   |  2      (item 5)
    #   n = 12, disagreeing mass = o_ab + o_ba = 4
    #   alpha = 1 - (n-1) * 4 / (n^2 - sum n_c^2) = 1 - 11*4 / (144 - 16 - 36 - 4) = 1 - 44/88 = 0.5
    labels = ratings({1: {"ann": "a", "ben": "a"}, 2: {"ann": "a", "ben": "b"},
                      3: {"ann": "b", "ben": "b"}, 4: {"ann": "b", "ben": "b"},
                      5: {"ann": "tie", "ben": "tie"}, 6: {"ann": "a", "ben": "b"},
                      7: {"ann": "skip", "ben": "a"}})  # a skip makes item 7 a one-label item
    result = agreement(labels)
    assert result["items"] == 6
    [pair] = result["pairs"]
    assert pair["labelers"] == ("ann", "ben") and pair["items"] == 6
    assert pair["observed"] == pytest.approx(2 / 3)
    assert pair["kappa"] == pytest.approx(0.5)
    assert result["alpha"] == pytest.approx(0.5)


def test_krippendorff_alpha_with_three_labelers_and_gaps_by_hand():
    # item:  1    2    3    4    5
    # ann:   a    a    b    tie  a
    # ben:   a    b    b    .    .
    # cat:   a    .    b    b    .
    # Item 5 has one label: not pairable, left out (items = 4).
    # Coincidences, each ordered pair of values within an item weighted 1/(m_u - 1):
    #   item 1 (a,a,a; m=3): 6 ordered a-a pairs * 1/2 -> o_aa += 3
    #   item 2 (a,b;   m=2): o_ab += 1, o_ba += 1
    #   item 3 (b,b,b; m=3): o_bb += 3
    #   item 4 (tie,b; m=2): o_tb += 1, o_bt += 1
    #            a   b   tie | n_c
    #     a      3   1   0   |  4
    #     b      1   3   1   |  5
    #     tie    0   1   0   |  1
    #   n = 10, disagreeing mass = 4
    #   alpha = 1 - (n-1) * 4 / (n^2 - sum n_c^2)
    #         = 1 - 9*4 / (100 - 16 - 25 - 1) = 1 - 36/58 = 11/29
    labels = ratings({1: {"ann": "a", "ben": "a", "cat": "a"}, 2: {"ann": "a", "ben": "b"},
                      3: {"ann": "b", "ben": "b", "cat": "b"}, 4: {"ann": "tie", "cat": "b"},
                      5: {"ann": "a"}})
    result = agreement(labels)
    assert result["items"] == 4
    assert result["alpha"] == pytest.approx(11 / 29)
    # Pairs in name order over shared items:
    #   ann-ben: items 1,2,3 -> same on 1,3 -> observed 2/3
    #     kappa: ann a2 b1, ben a1 b2; pe = (2*1 + 1*2)/9 = 4/9; (2/3 - 4/9)/(5/9) = 2/5
    #   ann-cat: items 1,3,4 -> same on 1,3 -> observed 2/3
    #     kappa: ann a1 b1 tie1, cat a1 b2; pe = (1*1 + 1*2)/9 = 3/9; (6/9 - 3/9)/(6/9) = 1/2
    #   ben-cat: items 1,3 -> same on both -> observed 1
    #     kappa: ben a1 b1, cat a1 b1; pe = (1*1 + 1*1)/4 = 1/2; (1 - 1/2)/(1/2) = 1
    assert [(p["labelers"], p["items"], p["observed"], p["kappa"]) for p in result["pairs"]] == [
        (("ann", "ben"), 3, pytest.approx(2 / 3), pytest.approx(2 / 5)),
        (("ann", "cat"), 3, pytest.approx(2 / 3), pytest.approx(1 / 2)),
        (("ben", "cat"), 2, 1.0, pytest.approx(1.0)),
    ]


def test_krippendorff_library_matches_the_textbook_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 coders x 12 units,
    # nominal alpha = 0.743. Confirms the orientation we pass (coders are rows).
    nan = np.nan
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan]]
    import krippendorff

    assert krippendorff.alpha(reliability_data=data, level_of_measurement="nominal") == \
        pytest.approx(0.743, abs=5e-4)


def test_undefined_agreement_is_none():
    # Both labelers chose "a" on both items: po = 1 and pe = 1, so kappa = 0/0; alpha likewise
    # has no expected disagreement (one category).
    same = agreement(ratings({1: {"ann": "a", "ben": "a"}, 2: {"ann": "a", "ben": "a"}}))
    assert same["pairs"][0]["kappa"] is None and same["pairs"][0]["observed"] == 1.0
    assert same["alpha"] is None and same["items"] == 2
    # One shared item is too few for kappa, but the pair is still listed with its raw share.
    one = agreement(ratings({1: {"ann": "a", "ben": "b"}, 2: {"ann": "a"}}))
    assert one["pairs"] == [{"labelers": ("ann", "ben"), "items": 1, "kappa": None,
                             "observed": 0.0}]
    # Nobody shares an item: no pairs, no alpha.
    assert agreement(ratings({1: {"ann": "a"}, 2: {"ben": "b"}})) == \
        {"pairs": [], "alpha": None, "items": 0}
    assert agreement([]) == {"pairs": [], "alpha": None, "items": 0}


@pytest.mark.parametrize("choice, flipped, side", [
    ("a", False, "left"),   # answer_a shown left, a chosen
    ("a", True, "right"),   # answer_a shown right, a chosen
    ("b", False, "right"),  # answer_b shown right, b chosen
    ("b", True, "left"),    # answer_b shown left, b chosen
])
def test_position_bias_maps_choice_to_screen_side(choice, flipped, side):
    result = position_bias([label(1, "ann", choice, flipped=flipped)], min_labels=1)
    assert (result["left"], result["right"]) == ((1, 0) if side == "left" else (0, 1))
    assert result["p"] == 1.0 and result["warning"] is None  # one label: p = 2 * 1/2 = 1


def test_position_bias_warns_when_one_side_wins_too_often():
    # 40 left, 10 right (ties, both_bad and skips do not count):
    # p = 2 * sum_{i=40..50} C(50, i) / 2^50 = 2.39e-5 -> printed as 0.000
    labels = ([label(i, "ann", "a", flipped=False) for i in range(20)]
              + [label(i, "ben", "b", flipped=True) for i in range(20)]
              + [label(i, "cat", "a", flipped=True) for i in range(10)]
              + [label(i, "dan", c) for i, c in enumerate(["tie", "both_bad", "skip"])])
    result = position_bias(labels)
    assert (result["left"], result["right"]) == (40, 10)
    assert result["p"] == pytest.approx(2 * sum(math.comb(50, i) for i in range(40, 51)) / 2**50)
    assert result["warning"] == ("Labelers chose the left answer 40 of 50 times (p = 0.000 if "
                                 "position did not matter): the side may be swaying them.")
    # The other way round names the right side.
    mirrored = [{**lab, "flipped": not lab["flipped"]} for lab in labels]
    assert position_bias(mirrored)["warning"].startswith("Labelers chose the right answer 40 of 50")


def test_position_bias_quiet_when_balanced_or_too_few():
    # 30 of 50 left: p = 0.203 > 0.05, no warning.
    balanced = [label(i, "ann", "a") for i in range(30)] + [label(i, "ben", "b") for i in range(20)]
    result = position_bias(balanced)
    assert (result["left"], result["right"]) == (30, 20)
    assert result["p"] == pytest.approx(0.2026, abs=1e-4) and result["warning"] is None
    # 9 of 9 left is lopsided, but under min_labels=10: no test at all.
    few = position_bias([label(i, "ann", "a") for i in range(9)])
    assert few == {"left": 9, "right": 0, "p": None, "warning": None}


def test_win_rates_follow_the_models_not_the_letters():
    labels = [
        label(1, "ann", "a", model_a="base", model_b="tuned"),    # base wins
        label(2, "ann", "a", model_a="tuned", model_b="base"),    # tuned wins
        label(3, "ann", "b", model_a="tuned", model_b="base"),    # base wins
        label(4, "ann", "tie", model_a="base", model_b="tuned"),  # half each
        label(5, "ann", "skip", model_a="base", model_b="tuned"),  # not a vote
        label(6, "ann", "a", model_a="base", model_b="base"),     # one model twice: no pair
    ]
    # base vs tuned: 4 votes, base 2 wins + 1 tie -> (2 + 0.5) / 4 = 0.625
    [row] = win_rates(labels)
    assert (row["first"], row["second"], row["votes"], row["wins_first"], row["wins_second"],
            row["ties"]) == ("base", "tuned", 4, 2, 1, 1)
    assert row["win_rate"] == 0.625
    assert (row["low"], row["high"]) == pytest.approx(arena.anytime(2.5, 4))
    assert row["low"] < 0.625 < row["high"]


def test_win_rates_count_an_item_labelled_twice_once():
    """Overlap 2, 3 items, both labelers pick the tuned model each time: 6 labels gave Wilson's low end
    6 / (6 + 3.84) = 0.61 and "better"; the two labels of an item are not independent, so the interval is
    over 3 items (low (1/80)^(1/3) = 0.232, not 6 labels' (1/140)^(1/6) = 0.439): can't tell yet. An item whose
    labelers split scores a half."""
    labels = [label(i, who, "b") for i in (1, 2, 3) for who in ("ann", "ben")]
    [row] = win_rates(labels)
    assert (row["votes"], row["items"], row["wins_second"]) == (6, 3, 6)
    assert (row["low"], row["high"]) == pytest.approx(arena.anytime(0, 3))
    shown = arena.flip(row)
    assert shown["low"] == pytest.approx((1 / 80) ** (1 / 3)) and arena.anytime(6, 6)[0] > shown["low"]
    assert arena.verdict(shown, "label") == "can't tell yet: about 5 more labelled items at this rate would tell"
    split = labels + [label(4, "ann", "a"), label(4, "ben", "b")]
    [row] = win_rates(split)
    assert (row["items"], row["win_rate"]) == (4, pytest.approx(0.5 / 4))
    assert (row["low"], row["high"]) == pytest.approx(arena.anytime(0.5, 4))


def test_labeler_stats_counts_and_median_seconds():
    labels = [
        label(1, "ben", "a", seconds=4.0), label(2, "ben", "skip", seconds=10.0),
        label(3, "ben", "b", seconds=None), label(4, "ben", "tie", seconds=6.0),
        label(1, "ann", "a", seconds=2.0), label(2, "ann", "both_bad", seconds=5.0),
        label(1, "cat", "skip"),
    ]
    # ben: 3 labels + 1 skip; seconds 4, 10, 6 (None left out) -> median 6
    # ann: 2 labels; seconds 2, 5 -> median (2 + 5) / 2 = 3.5
    # cat: only a skip, no seconds -> None
    assert labeler_stats(labels) == [
        {"labeler": "ann", "labels": 2, "skips": 0, "median_s": 3.5},
        {"labeler": "ben", "labels": 3, "skips": 1, "median_s": 6.0},
        {"labeler": "cat", "labels": 0, "skips": 1, "median_s": None},
    ]


def test_unknown_choice_is_a_clear_error():
    with pytest.raises(ValueError, match=r"item 7 by 'ann' has choice 'left'"):
        aggregate([label(7, "ann", "left")])
