"""How a page names the dataset an export or a Train-on-these button made, or found made before."""

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
