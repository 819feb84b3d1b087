"""How a page names the dataset an export or a Train-on-these button made, or found made before, and
what it should know about it."""

from __future__ import annotations


def made_or_found(row: dict, typed: str | None, what: str, made: str = "Made") -> str:
    """'Made **name**', or, where the same votes or labels were exported before (the catalogue keeps one
    dataset per file), 'These votes were exported before, as **name**' — saying so when a name typed for
    this export is not the one kept (it was dropped without a word)."""
    if not row.get("exported_before"):
        return f"{made} **{row['name']}**"
    typed = (typed or "").strip()
    ignored = (f" (the name typed, *{typed}*, is not used: the same {what} make the same dataset)"
               if typed and typed != row["name"] else "")
    return f"These {what} were exported before, as **{row['name']}**{ignored}"


def cut_chosen_note(row: dict) -> str:
    """Said after labels or chat votes are exported when some winning answers were cut off (at the length
    limit, or by Stop): trained on, a chosen answer that stops mid-sentence teaches the model to stop there."""
    origin = row["meta"].get("origin") or {}
    cut = origin.get("cut_chosen") or 0
    if not cut:
        return ""
    votes = origin.get("kind") == "chat votes"
    were = "was" if cut == 1 else "were"
    if votes:
        said = (f"{cut} of the {origin.get('votes', 0)} winning replies {were} cut off (at *Max new tokens*, or "
                "by *Stop*)")
        fix = "Raise *Max new tokens* under Generation settings for whole replies."
    else:
        said = f"{cut} of the {origin.get('pairs', 0)} winning answers {were} cut off at the project's length limit"
        fix = "A project made with a higher *Max new tokens* gives whole answers."
    return f" ⚠️ {said}: training on an answer that stops mid-sentence teaches the model to stop there too. {fix}"
