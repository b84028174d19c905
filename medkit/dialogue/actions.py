"""The doctor's action format: one line per turn, strictly parseable.

::

    ASK: <a question for the patient>
    EXAM: <an examination or test, by name or id>
    DIAGNOSIS: <most likely>; <second>; <third> | confidence: 0.7 | because: <finding>; <finding>

The differential after the first name, the confidence and the rationale (``because:``,
the patient facts the diagnosis rests on; checked for hallucinated facts by
:mod:`medkit.dialogue.hallucination`) are optional, in either order. Anything
else (several actions, free text, an empty reply, a confidence outside [0, 1])
is a :class:`FormatError`, which the environment counts and answers with
:data:`FORMAT_REMINDER`, never raises. Word-level tokenisers detokenise with
spaces around punctuation (``ASK : Do you ... ?``), so spacing is free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KINDS = ("ASK", "EXAM", "DIAGNOSIS")
FORMAT_REMINDER = ("[format] Reply with exactly one line: 'ASK: <question>', 'EXAM: <test>' or "
                   "'DIAGNOSIS: <name>; <second>; <third> | confidence: <0-1>'.")
_LINE = re.compile(r"^\s*(ASK|EXAM|DIAGNOSIS)\s*:\s*(.+?)\s*$", re.S)
_CONF = re.compile(r"^confidence\s*:?\s*([0-9]*\.?[0-9]+)$", re.I)
_BECAUSE = re.compile(r"^because\s*:\s*(.+)$", re.I | re.S)


@dataclass(frozen=True)
class Action:
    """A parsed doctor action. ``differential`` is ranked (first = final diagnosis);
    ``rationale`` lists the facts a DIAGNOSIS cites (``because: fever; cough``)."""

    kind: str
    text: str
    differential: tuple[str, ...] = field(default_factory=tuple)
    confidence: float | None = None
    rationale: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class FormatError:
    """A reply that is not exactly one action; ``reason`` says why."""

    raw: str
    reason: str


def parse_action(text: str) -> Action | FormatError:
    """Parse one doctor reply (see the module docstring)."""
    raw = text if isinstance(text, str) else ""
    # word-level detokenisation writes "0 . 7": join decimals back before parsing
    lines = [ln for ln in raw.strip().splitlines() if ln.strip()]
    if not lines:
        return FormatError(raw, "empty reply")
    if len(lines) > 1:
        return FormatError(raw, f"{len(lines)} lines; one action per turn")
    m = _LINE.match(re.sub(r"(\d)\s*\.\s*(\d)", r"\1.\2", lines[0]))
    if not m:
        return FormatError(raw, "does not start with ASK:, EXAM: or DIAGNOSIS:")
    kind, body = m.group(1), m.group(2).strip()
    if re.search(r"\b(ASK|EXAM|DIAGNOSIS)\s*:", body):
        return FormatError(raw, "several actions in one turn")
    if kind != "DIAGNOSIS":
        return Action(kind, body)
    head, *extras = body.split("|")
    conf, why = None, ()
    for seg in (x.strip() for x in extras):
        c, b = _CONF.match(seg), _BECAUSE.match(seg)
        if c and conf is None:
            conf = float(c.group(1))
            if not 0.0 <= conf <= 1.0:
                return FormatError(raw, f"confidence {conf} is not in [0, 1]")
        elif b and not why:
            why = tuple(x.strip() for x in re.split(r"[;,]|\band\b", b.group(1)) if x.strip())
        else:
            return FormatError(raw, "text after '|' must be 'confidence: <0-1>' or 'because: <facts>' (once each)")
    names = tuple(n.strip() for n in head.split(";") if n.strip())
    if not names:
        return FormatError(raw, "DIAGNOSIS names no condition")
    return Action(kind, names[0], names, conf, why)


def format_action(action: Action) -> str:
    """The canonical one-line text of ``action`` (inverse of :func:`parse_action`)."""
    if action.kind != "DIAGNOSIS":
        return f"{action.kind}: {action.text}"
    s = f"DIAGNOSIS: {'; '.join(action.differential or (action.text,))}"
    s += f" | confidence: {action.confidence:.2f}" if action.confidence is not None else ""
    return s + (f" | because: {'; '.join(action.rationale)}" if action.rationale else "")


def norm(s: str) -> str:
    """Lower-case words only (matching questions, tests and condition names)."""
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()
