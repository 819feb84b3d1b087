"""How a page names the dataset an export or a Train-on-these button made, or found made before, and
what it should know about it."""

from __future__ import annotations

from components.text import literal


def made_or_found(row: dict, typed: str | None, what: str, made: str = "Made") -> str:
    """'Made **name**', or, where the same votes or labels were exported before (the catalogue keeps one
    dataset per file), 'These votes were exported before, as **name**' — saying so when a name typed for
    this export is not the one kept (it was dropped without a word)."""
    if not row.get("exported_before"):
        return f"{made} **{literal(row['name'])}**"
    typed = (typed or "").strip()
    ignored = (f" (the name typed, *{literal(typed)}*, is not used: the same {what} make the same dataset)"
               if typed and typed != row["name"] else "")
    return f"These {what} were exported before, as **{literal(row['name'])}**{ignored}"


def imported_or_found(row: dict, typed: str | None) -> str:
    """'Imported **name**', or, for a file imported before with the same settings (one dataset per file and
    settings), that it is that dataset — and that a name typed for this import is not used."""
    if not row.get("imported_before"):
        return f"Imported **{literal(row['name'])}**"
    typed = (typed or "").strip()
    ignored = (f" (the name typed, *{literal(typed)}*, is not used: the same file with the same settings makes "
               "the same dataset)" if typed and typed != row["name"] else "")
    return f"This file was imported before with these settings, as **{literal(row['name'])}**{ignored}"


def cut_chosen_note(row: dict) -> str:
    """Said after labels or chat votes are exported when some winning answers were cut off (at the length
    limit, or by Stop): trained on, a chosen answer that stops mid-sentence teaches the model to stop there."""
    origin = row["meta"].get("origin") or {}
    cut = origin.get("cut_chosen") or 0
    if not cut:
        return ""
    chat = origin.get("kind") == "chat votes"
    # the pairs the dataset holds (a pair of one answer twice is left out by the import)
    total = origin.get("taught", origin.get("votes", 0) if chat else origin.get("pairs", 0) + origin.get("votes", 0))
    one, many = ("reply", "replies") if chat else ("answer", "answers")
    which = (f"The winning {one} was" if cut == total == 1 else
             f"Both winning {many} were" if cut == total == 2 else f"All {cut} winning {many} were" if cut == total
             else f"{cut} of the {total} winning {many} {'was' if cut == 1 else 'were'}")
    from_votes = cut if chat else origin.get("cut_votes", 0)  # a chat's limit: a project's does not help them
    hows, fixes = [], []
    if cut > from_votes:
        hows.append("at the project's *Longest answer (tokens)*")
        fixes.append("A project with a higher *Longest answer (tokens)* gives whole answers")
    if from_votes:
        hows.append("at *Max new tokens*, or by *Stop*" if chat else "at the chat's *Max new tokens*, or by *Stop*")
        fixes.append("Raise *Max new tokens* under " + ("" if chat else "the Chat tab's ")
                     + "Generation settings for whole replies")
    return (f" ⚠️ {which} cut off ({', or '.join(hows)}): training on an answer that stops mid-sentence teaches the "
            f"model to stop there too. {'. '.join(fixes)}.")
