"""Side-by-side votes: win rates with intervals, a check for position bias, and the export of
votes as a TRL preference dataset."""

from __future__ import annotations

import math
from collections import defaultdict

WINNERS = ("a", "b", "tie", "both_bad")
Z95 = 1.959964
NO_REPLY = "…"  # what the Chat tab shows in place of a reply not (yet) written


def silent(reply: str) -> bool:
    """A side that said nothing, or was stopped before its first word (the page showed NO_REPLY)."""
    return reply.strip() in ("", NO_REPLY)


def counted(votes: list[dict]) -> list[dict]:
    """The votes that compare two replies: a vote stored before votes on a silent side were refused
    compared one reply with "…", and is left out of results and exports."""
    return [v for v in votes if not silent(v["reply_a"]) and not silent(v["reply_b"])]


def wilson(successes: float, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (successes may be fractional: ties count half), for one look at
    a fixed number (a judge's agreement, a bench's accuracy); a win rate read as the votes come in is `anytime`'s."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def anytime(score: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """A 95% interval for a win rate that may be looked at after every vote (a confidence sequence): the rates p
    under which the votes so far are at most 1/alpha times less likely than under an even mixture of all rates
    (a Beta(1, 1)-mixture likelihood ratio; by Ville's inequality a wrong p is left out at any look with
    probability at most alpha: Robbins 1970, Howard et al. 2021). A fixed-n interval (Wilson) read after each
    vote said "better" or "worse" of two equal models in 22% of 20-vote runs. score may be fractional (a tie
    counts half, an item the mean of its labels): the bound holds at every p for scores in [0, 1] whose mean is
    p, as each vote's factor (q/p)^x ((1-q)/(1-p))^(1-x), convex in x, is at most x q/p + (1-x)(1-q)/(1-p),
    whose mean is 1. (An item's mean moves as its later labels come: read between them, a little looser.)"""
    if n == 0:
        return 0.0, 1.0
    s = min(max(score, 0.0), float(n))  # (a rate times n can land a hair outside)
    f = n - s
    # log of what the votes' likelihood must reach: the mixture's, B(s + 1, f + 1), less log(1/alpha)
    bar = math.lgamma(s + 1) + math.lgamma(f + 1) - math.lgamma(n + 2) - math.log(1 / alpha)

    def fits(p: float) -> bool:
        if (p <= 0 and s > 0) or (p >= 1 and f > 0):
            return False
        return (s * math.log(p) if s else 0.0) + (f * math.log(1 - p) if f else 0.0) >= bar

    centre = s / n  # the likelihood's top, above the mixture's average: inside; it falls away on both sides

    def edge(outside: float) -> float:
        if fits(outside):
            return outside
        inside = centre
        for _ in range(60):
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if fits(mid) else (inside, mid)
        return inside

    return edge(0.0), edge(1.0)


def win_rates(votes: list[dict], by_blind: bool = False, per: str | None = None) -> list[dict]:
    """Per pair of models (in name order): votes, wins of each, ties (incl. both bad), and the
    first model's win rate with its 95% interval (`anytime`: it may be read after every vote). Ties and
    'both bad' count half to each.
    by_blind: blind votes and votes cast with the names shown are counted apart (each row's "blind"
    says which; blind first): a voter who knows which side is the tuned model can lean toward it,
    so only the blind rows compare the models fairly (as Chatbot Arena counts anonymous votes only).
    per: the votes that share this key's value (labels of one item) are not independent: each group
    scores the mean of its votes, and the win rate and interval are taken over groups ("items")."""
    pairs = defaultdict(lambda: {"votes": 0, "wins_first": 0, "wins_second": 0, "ties": 0})
    groups: dict[tuple, dict] = defaultdict(lambda: defaultdict(list))
    for v in votes:
        first, second = sorted((v["model_a"], v["model_b"]))
        if first == second:
            continue
        key = (first, second, not v.get("blind")) if by_blind else (first, second)
        stats = pairs[key]
        stats["votes"] += 1
        if v["winner"] in ("tie", "both_bad"):
            stats["ties"] += 1
            score = 0.5
        else:
            winner = v["model_a"] if v["winner"] == "a" else v["model_b"]
            stats["wins_first" if winner == first else "wins_second"] += 1
            score = 1.0 if winner == first else 0.0
        if per:
            groups[key][v[per]].append(score)
    out = []
    for key, s in sorted(pairs.items()):
        first, second, *named = key
        if per:
            means = [sum(g) / len(g) for g in groups[key].values()]
            score, n, extra = sum(means), len(means), {"items": len(means)}
        else:
            score, n, extra = s["wins_first"] + 0.5 * s["ties"], s["votes"], {}
        low, high = anytime(score, n)
        out.append({"first": first, "second": second, **s, **extra, "win_rate": score / n,
                    "low": low, "high": high, **({"blind": not named[0]} if by_blind else {})})
    return out


def votes_to_tell(win_rate: float, votes: int, most: int = 10_000) -> int | None:
    """How many votes in all, at this win rate, put the 95% interval (`anytime`) clear of 50% (None: not within
    `most`, or no lean at all)."""
    if win_rate == 0.5:
        return None

    def tells(n: int) -> bool:
        low, high = anytime(win_rate * n, n)
        return low > 0.5 or high < 0.5

    lo, hi = max(votes, 1), most  # once it tells at this rate, it tells with more: the first n, by halving
    if not tells(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if tells(mid) else (mid + 1, hi)
    return lo


def verdict(row: dict, unit: str = "vote", more: bool = True) -> str:
    """What a pair's result (a row of win_rates) says of its first model, in words: better or worse
    when the 95% interval is clear of 50%, else that it cannot tell yet, and roughly how many more
    votes at this rate would tell (a row counted over labelled items, see labeling.win_rates, counts items).
    more=False: none can come (a label project whose every item has all its labels)."""
    if row["low"] > 0.5:
        return "better"
    if row["high"] < 0.5:
        return "worse"
    if not more:  # ("about 1 more labelled item would tell" of a project with nothing left to label)
        return "can't tell: no lean either way" if row["win_rate"] == 0.5 else "can't tell: too few items"
    counted = row.get("items", row["votes"])
    needed = votes_to_tell(row["win_rate"], counted)
    if needed is None or needed <= counted:
        return "can't tell yet: no lean either way" if row["win_rate"] == 0.5 else "can't tell yet"
    more, unit = needed - counted, ("labelled item" if "items" in row else unit)
    return f"can't tell yet: about {more} more {unit}{'s' if more != 1 else ''} at this rate would tell"


def flip(row: dict) -> dict:
    """A pair's result (a row of win_rates) seen from its second model."""
    return {**row, "first": row["second"], "second": row["first"], "wins_first": row["wins_second"],
            "wins_second": row["wins_first"], "win_rate": 1 - row["win_rate"], "low": 1 - row["high"],
            "high": 1 - row["low"]}


def _binomial_two_sided(k: int, n: int) -> float:
    """P(a result at least this lopsided | fair coin)."""
    extreme = max(k, n - k)
    tail = sum(math.comb(n, i) for i in range(extreme, n + 1)) / 2**n
    return min(1.0, 2 * tail)


def position_bias(votes: list[dict], min_votes: int = 10, alpha: float = 0.05) -> str | None:
    """A warning when side A (or B) wins decisive blind votes more often than chance explains. Only blind votes
    count: their sides are shuffled, so whatever the models, side A wins each with probability ½ unless the
    side itself sways the voter. With the names shown a side belongs to a model (*Chat with this run* puts the
    tuned one on B), and a better tuned model "won side B" 9 times of 10 by being better: the warning was
    false in the commonest flow."""
    decisive = [v for v in votes if v.get("blind") and v["winner"] in ("a", "b") and v["model_a"] != v["model_b"]]
    n = len(decisive)
    if n < min_votes:
        return None
    a_wins = sum(v["winner"] == "a" for v in decisive)
    p = _binomial_two_sided(a_wins, n)
    if p >= alpha:
        return None
    side, wins = ("A (left)", a_wins) if a_wins > n - a_wins else ("B (right)", n - a_wins)
    return (f"Side {side} won {wins} of {n} decisive blind votes (p = {p:.3f} if position did not matter): either "
            "the shuffle put the model that wins more often on that side more often by chance, or the side itself "
            "sways the choice; more votes will tell.")


def unfinished_winners(votes: list[dict]) -> int:
    """Decisive votes whose winning reply had no end (cut at max new tokens, or stopped): as a chosen
    answer it teaches stopping mid-sentence. (Votes stored before this was kept count as whole.)"""
    return sum(v["winner"] in ((v.get("settings") or {}).get("unfinished") or ()) for v in votes)


def without_silent_turns(prompt: list[dict]) -> list[dict]:
    """A conversation without its exchanges whose reply was silent (stopped before its first word: "…", or ""),
    each with the question before it: an empty assistant turn is refused by the import, and one empty turn in a
    vote's prompt stopped every export of the votes."""
    out: list[dict] = []
    for message in prompt:
        if message["role"] == "assistant" and silent(str(message["content"])):
            if out and out[-1]["role"] == "user":
                out.pop()
            continue
        out.append(message)
    return out


def preference_rows(votes: list[dict]) -> list[dict]:
    """Decisive votes as TRL conversational preference rows; ties and 'both bad' are left out.
    The prompt is the winning side's conversation (its own earlier replies included), after the
    system prompt both replies were written under: without it, replies preferred for following
    "answer in one sentence" would teach terseness on every prompt."""
    rows = []
    for v in votes:
        if v["winner"] not in ("a", "b"):
            continue
        win, lose = ("a", "b") if v["winner"] == "a" else ("b", "a")
        prompt = without_silent_turns(v[f"prompt_{win}"])
        system = ((v.get("settings") or {}).get("system_prompt") or "").strip()
        if system and (not prompt or prompt[0]["role"] != "system"):  # as chat.Decoder put it
            prompt = [{"role": "system", "content": system}, *prompt]
        rows.append({
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": v[f"reply_{win}"]}],
            "rejected": [{"role": "assistant", "content": v[f"reply_{lose}"]}],
        })
    return rows
