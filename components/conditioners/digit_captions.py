"""Captions of the shipped digits: "a handwritten digit seven" and a few other phrasings, derived
from the class label, and the words a small tokenizer for them needs."""

from __future__ import annotations

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PHRASINGS = (
    "a handwritten digit {name}",
    "the number {name}",
    "a picture of a {name}",
    "{name}, written by hand",
)


def caption(label: int, phrasing: int = 0) -> str:
    if not 0 <= int(label) < len(NAMES):
        raise ValueError(f"digit label must be in [0, 10), got {label}")
    return PHRASINGS[phrasing % len(PHRASINGS)].format(name=NAMES[int(label)])


def words() -> list[str]:
    """Every word of every caption (what the builtin tokenizer merges into single tokens)."""
    out = set(NAMES)
    for p in PHRASINGS:
        out.update(w.strip(",") for w in p.replace("{name}", "").split())
    return sorted(w for w in out if w)
