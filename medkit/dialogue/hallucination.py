"""Hallucinated facts: doctor turns that presuppose or assert a patient fact the dialogue never established.

Definition (what :func:`find_hallucinations` flags). A doctor turn *hallucinates*
evidence ``e`` of the knowledge base when, at that turn, the turn treats ``e`` as
a fact about this patient and ``e`` is not *established present* by the dialogue
before the turn. Two ways a turn treats ``e`` as a fact:

- **presupposition** in an ``ASK`` / ``EXAM`` text: a clause that takes the fact
  for granted rather than asking about it. Recognised clause patterns (:data:`TRIGGERS`):
  a clause-initial "Since / Given (that) / Because (of) / As / Now that /
  Considering / With  you... / your..." ("Since you have a fever, ..."), reported
  speech "you said / mentioned / told me / reported / complained of ...",
  "how long have you had ...", "when did your ... start / begin", "how bad / how
  severe / where is your ...", "tell me about / describe your ...". A plain
  question ("Do you have a fever?") presupposes nothing.
- **assertion** in a ``DIAGNOSIS`` rationale (``| because: fever; cough``): every
  cited item is asserted.

The clause (or rationale item) is mapped to evidences through the evidence
vocabulary (:func:`match_fact`: lay question, lay phrase ``say``, finding text, id
words). *Established present* before turn t: the chief complaint and anything the
patient volunteered in the opening (the opening row's ``facts``), every earlier
answer with ``present=True``, and the present findings of every earlier exam
(``findings``). A flagged fact is ``"denied"`` when the dialogue established it
absent (a "no" answer, or an exam that did not find it), else ``"unestablished"``
(never asked). A fact that is true of the patient but was not yet elicited still
counts: the doctor asserted what it did not know.

Conservative by design (precision over recall): a clause that maps to no evidence
cannot be checked and is not flagged; a clause that maps equally well to several
evidences is flagged only if none of them is established.
"""

from __future__ import annotations

import re

from .actions import Action, norm, parse_action
from .patient import _STOP

# words that carry no fact inside a presupposition clause ("you've been having ...")
_CLAUSE_STOP = _STOP | {"ve", "re", "s", "d", "ll", "m", "been", "having", "got", "get", "getting", "still", "also",
                        "some", "so", "really", "these", "those", "since", "given", "because", "as", "now",
                        "considering", "said", "mentioned", "told", "reported", "described", "complained", "about",
                        "start", "started", "begin", "began", "come", "came", "worse", "bad", "severe", "where",
                        "tell", "more", "describe", "long", "new", "recent", "recently"}
_END = r"[^,;?.!|]*"
TRIGGERS = (
    re.compile(rf"(?:^|[,;:]\s*)(?:since|given(?:\s+that)?|because(?:\s+of)?|as|now\s+that|considering|with)\s+"
               rf"(?P<c>(?:you|your)\b{_END})", re.I),
    re.compile(rf"\byou(?:'ve|\s+have)?\s+(?:said|mentioned|told\s+me|reported|described|complained\s+of)\s+"
               rf"(?:that\s+)?(?P<c>{_END})", re.I),
    re.compile(rf"\bhow\s+long\s+have\s+you\s+(?:had|been)\s+(?P<c>{_END})", re.I),
    re.compile(r"\b(?:when|how)\s+did\s+(?:your|the|this)\s+(?P<c>[^,;?.!|]*?)\s+(?:start|begin|come\s+on)\b", re.I),
    re.compile(rf"\b(?:how\s+bad|how\s+severe|where)\s+is\s+(?:your|the)\s+(?P<c>{_END})", re.I),
    re.compile(rf"\b(?:tell\s+me\s+(?:more\s+)?about|describe)\s+your\s+(?P<c>{_END})", re.I),
)
MIN_COVERAGE = 0.6


def _words(s: str) -> set[str]:
    return {w for w in norm(s).split() if w not in _CLAUSE_STOP}


def _fact_index(kb) -> dict[str, set[str]]:
    key = ("dialogue_fact_index",)
    if key not in kb._cache:
        kb._cache[key] = {eid: _words(" ".join((ev.question, ev.say, ev.finding, eid.replace("_", " "))))
                          for eid, ev in kb.evidences.items()}
    return kb._cache[key]


def match_fact(kb, text: str, min_coverage: float = MIN_COVERAGE) -> list[str]:
    """Evidence ids a fact phrase names, best first (empty: it names none).

    Exact id / lay phrase / finding text first; else every evidence whose vocabulary
    covers the largest share (>= ``min_coverage``) of the phrase's content words,
    ordered by Jaccard overlap (the more specific evidence first). "you have a
    fever" -> ["fever", ...]; "your football" -> [].
    """
    n = norm(text)
    for eid, ev in kb.evidences.items():
        if n and n in (norm(eid), norm(ev.say), norm(ev.finding)):
            return [eid]
    qw = _words(text)
    if not qw:
        return []
    scored = []
    for eid, w in _fact_index(kb).items():
        inter = len(qw & w)
        if inter:
            scored.append((inter / len(qw), inter / len(qw | w), eid))
    if not scored:
        return []
    best = max(s[0] for s in scored)
    if best < min_coverage:
        return []
    return [e for _, _, e in sorted((s for s in scored if s[0] == best), key=lambda s: -s[1])]


def presupposed(text: str) -> list[str]:
    """The presupposition clauses of one ASK / EXAM text (:data:`TRIGGERS`), in order."""
    out = []
    for pat in TRIGGERS:
        out += [m.group("c").strip() for m in pat.finditer(text) if m.group("c").strip()]
    return out


def find_hallucinations(transcript: list[dict], kb, *, established=()) -> list[dict]:
    """Hallucinated facts in one dialogue (see the module docstring).

    Args:
        transcript: ``DialogueEnv.transcript`` rows (hand-written ones work: doctor rows need
            ``role`` and ``text``; ask rows ``evidence`` / ``present``; exam rows ``test`` /
            ``findings``; the opening row may list ``facts``).
        kb: the knowledge base (evidence vocabulary).
        established: facts known present before the first turn (the chief complaint).
    Returns:
        ``[{"turn", "evidence", "status": "denied" | "unestablished", "where":
        "presupposition" | "rationale", "text"}]`` in dialogue order.
    """
    present, absent = set(established), set()
    out = []
    for i, row in enumerate(transcript):
        if row.get("role") == "patient" and row.get("kind") == "opening":
            present |= set(row.get("facts") or ())
        if row.get("role") != "doctor":
            continue
        act = parse_action(row.get("text", ""))
        claims: list[tuple[str, str]] = []
        if isinstance(act, Action):
            if act.kind in ("ASK", "EXAM"):
                claims = [("presupposition", c) for c in presupposed(act.text)]
            else:
                claims = [("rationale", c) for c in act.rationale]
        seen = set()
        for where, phrase in claims:
            cands = match_fact(kb, phrase)
            if not cands or any(e in present for e in cands) or cands[0] in seen:
                continue
            seen.add(cands[0])
            status = "denied" if any(e in absent for e in cands) else "unestablished"
            out.append({"turn": row.get("turn", i), "evidence": cands[0], "status": status, "where": where,
                        "text": phrase})
        # what this turn established (after its own claims were checked)
        if row.get("kind") == "ask" and row.get("evidence") is not None and row.get("present") is not None:
            (present if row["present"] else absent).add(row["evidence"])
        elif row.get("kind") == "exam" and row.get("test"):
            found = set(row.get("findings") or ())
            for eid, ev in kb.evidences.items():
                if ev.test == row["test"]:
                    (present if eid in found else absent).add(eid)
    return out
