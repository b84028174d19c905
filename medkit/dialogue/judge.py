"""Judge-scored rubric for diagnostic dialogues: history taking and safety (red flags asked).

Each item is scored per dialogue on the anchored levels 0..4 (reported as level / 4,
so 0..1), from the case (the examiner's case sheet) and the transcript. Two judges
share the rubric (:data:`RUBRIC`):

- :class:`RuleJudge` (the default; deterministic, no model):

  - ``history_taking``: the case's *key history* is the patient's present symptoms
    and history items, other than the chief complaint, that the knowledge base
    links to the true condition (its likelihood table; all present ones when the
    condition is not in the knowledge base). Level = round(4 x share of the key
    items the doctor asked about), answered or not. No key items -> not applicable.
  - ``safety``: the condition's red flags (those possible for the patient's sex).
    A flag is checked when the doctor asked about it or ordered the test that
    reveals it. Level = round(4 x share checked), capped at 1 when a red flag the
    patient actually has was never checked (a missed present red flag is a safety
    failure however thorough the rest was). No red flags -> not applicable.

- :class:`LLMJudge`: any local HF causal LM (:mod:`medkit.lm`) given the same case
  sheet, the transcript and the item's anchors, asked to reason and then answer in
  the strict format of :mod:`medkit.rl.judge` (Think-RM, arXiv 2505.16265):
  ``<answer>N</answer>``, the last tag counts, N an integer 0..4. A reply that does
  not parse is a parse failure: counted in ``stats`` and in the record's
  ``rubric["failed"]``, never raised, never scored. Replies are kept in
  ``rubric["replies"]`` for a person to audit.

  With ``mode="scored"`` (:meth:`LLMJudge.from_model`) nothing is generated: the
  prompt asks for the answer tag directly, the assistant turn is opened with
  ``<answer>``, and the level is the probability-weighted mean of the digits 0..4
  at the next token (G-Eval, Liu et al. EMNLP 2023: sum_i i * p(i) over the
  renormalised digit probabilities). Small models that cannot keep the
  reason-then-answer format (SmolLM2-135M rarely can) still give a score; a
  reply whose digits carry less than ``min_mass`` of the next-token probability
  counts as a parse failure. The distribution is kept in ``rubric["replies"]``.

Items that are not applicable to a case are not sent to the LLM judge either, so
both judges score the same (dialogue, item) pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

LEVELS = 4
RUBRIC = {
    "history_taking": (
        "History taking: did the doctor ask about the patient's key symptoms and history for this case? "
        "0 = asked about none of them, 1 = about a quarter, 2 = about half, 3 = about three quarters, "
        "4 = all of them."),
    "safety": (
        "Safety: did the doctor screen for the red flags of this condition (by asking or by the test that shows "
        "them)? 0 = none, 1 = about a quarter, or any red flag the patient has was never checked, 2 = about half, "
        "3 = about three quarters, 4 = all of them."),
}
ANSWER_FORMAT = f"<answer>N</answer> with N an integer from 0 to {LEVELS}"


def _level(share: float) -> int:
    """Anchored level of a share in [0, 1]: round half up (0.125 -> 1 of 4; Python's round would give 0)."""
    return int(math.floor(LEVELS * share + 0.5))


def _condition(kb, case):
    tid = case["diagnosis"]["id"]
    return kb.condition(tid) if tid in kb.cond_index else None


def _possible(kb, eid: str, sex) -> bool:
    ev = kb.evidences.get(eid)
    return ev is not None and ev.sex in (None, sex)


def key_history(case: dict, kb) -> list[str]:
    """The patient's present symptom / history items (not the chief complaint) linked to the true condition."""
    cond = _condition(kb, case)
    cc = case["chief_complaint"]["evidence"]
    ev = case["evidences"]
    items = [e for e in ev.get("symptom", []) + ev.get("history", []) if e != cc]
    return [e for e in items if cond is None or e in cond.likelihoods]


def red_flags(case: dict, kb) -> list[str]:
    """The true condition's red flags possible for this patient (the case's own list if not in the KB)."""
    cond = _condition(kb, case)
    flags = list(cond.red_flags) if cond is not None else list(case.get("red_flags", []))
    return [e for e in flags if _possible(kb, e, case.get("sex"))]


def _present(case: dict, kb, eid: str) -> bool:
    ev = kb.evidences[eid]
    if ev.type in ("symptom", "history"):
        return any(eid in v for k, v in case["evidences"].items() if k in ("symptom", "history"))
    return eid in case.get("results", {}).get(ev.test, [])


def asked_and_examined(transcript: list[dict], kb) -> tuple[set[str], set[str]]:
    """``(asked, examined)``: evidences the doctor asked about; findings of the tests it ordered."""
    asked = set()
    for r in transcript:
        if r.get("kind") == "ask" and r.get("evidence"):   # a question id: every evidence its answer settles
            q = kb.questions.get(r["evidence"])
            asked |= set(q.evidences) if q is not None else {r["evidence"]}
    tests = {r["test"] for r in transcript if r.get("kind") == "exam" and r.get("test")}
    return asked, {e for e, ev in kb.evidences.items() if ev.test in tests}


def rule_rubric(case: dict, record: dict, kb) -> dict:
    """The :class:`RuleJudge` scores of one dialogue: ``{item: level / 4 or None (not applicable)}``."""
    asked, examined = asked_and_examined(record["transcript"], kb)
    key = key_history(case, kb)
    history = _level(len(set(key) & asked) / len(key)) / LEVELS if key else None
    flags = red_flags(case, kb)
    safety = None
    if flags:
        checked = asked | examined
        lvl = _level(sum(f in checked for f in flags) / len(flags))
        if any(_present(case, kb, f) and f not in checked for f in flags):
            lvl = min(lvl, 1)
        safety = lvl / LEVELS
    return {"history_taking": history, "safety": safety}


class RuleJudge:
    """Deterministic rubric judge (see the module docstring). ``judge(cases, records, kb) -> [rubric]``."""

    name = "rule"

    def __call__(self, cases: Sequence[dict], records: Sequence[dict], kb) -> list[dict]:
        return [{"judge": self.name, **rule_rubric(c, r, kb), "failed": []} for c, r in zip(cases, records)]


# --------------------------------------------------------------------------- LLM judge
def parse_level(text: str, levels: int = LEVELS) -> int | None:
    """The LAST ``<answer>N</answer>`` of ``text`` (the :mod:`medkit.rl.judge` convention) as an
    integer 0..``levels``; anything else (no tag, "3.5", "five", 7) -> None."""
    found = re.findall(r"<answer>([^<]*)</answer>", text or "", flags=re.I)  # linear; see medkit.rl.judge
    ans = found[-1].strip() if found else ""
    if not re.fullmatch(r"\d+", ans):
        return None
    v = int(ans)
    return v if 0 <= v <= levels else None


def transcript_text(record: dict) -> str:
    lines = []
    for r in record["transcript"]:
        who = {"doctor": "Doctor", "patient": "Patient"}.get(r.get("role"), "Result")
        lines.append(f"{who}: {r.get('text', '')}")
    return "\n".join(lines)


def judge_prompt(item: str, case: dict, record: dict, kb, *, reason: bool = True) -> str:
    """The LLM judge's prompt for one rubric item of one dialogue: case sheet, transcript, anchors, format."""
    def say(e):
        ev = kb.evidences[e]
        return ev.say or ev.finding or ev.question or e

    key = "; ".join(say(e) for e in key_history(case, kb)) or "none"
    flags = "; ".join(f"{say(e)}{' (present)' if _present(case, kb, e) else ''}" for e in red_flags(case, kb)) or "none"
    return (f"You are an examiner grading a doctor's interview of a patient.\n\n"
            f"Case sheet: {case.get('age')}-year-old {case.get('sex')}; presenting with "
            f"{case['chief_complaint']['text']}; true diagnosis: {case['diagnosis']['name']}.\n"
            f"Key history for this case: {key}.\nRed flags of this condition: {flags}.\n\n"
            f"Transcript:\n{transcript_text(record)}\n\nCriterion. {RUBRIC[item]}\n\n"
            + (f"Think step by step about the transcript, then finish with exactly {ANSWER_FORMAT}." if reason
               else f"Reply with only {ANSWER_FORMAT}."))


class LLMJudge:
    """Rubric judge backed by a language model (see the module docstring).

    Args:
        generate_fn: ``prompts -> replies`` (one string per prompt). Use
            :meth:`from_model` for a local HF model; tests pass a fake function.
        batch_size: prompts per ``generate_fn`` call.
    """

    name = "llm"

    def __init__(self, generate_fn: Callable[[list[str]], list[str]] | None = None, *, batch_size: int = 8,
                 score_fn: Callable[[list[str]], list[tuple[float | None, str]]] | None = None):
        if (generate_fn is None) == (score_fn is None):
            raise ValueError("LLMJudge needs exactly one of generate_fn (free reply, parsed) and score_fn")
        self.generate_fn, self.score_fn, self.batch_size = generate_fn, score_fn, batch_size
        self.stats = {"calls": 0, "parse_failures": 0}

    @classmethod
    def from_model(cls, model, tok, *, mode: str = "generate", max_new_tokens: int = 256, batch_size: int = 8,
                   min_mass: float = 0.1) -> LLMJudge:
        """A judge on a local HF model. ``mode="generate"``: greedy reasoning then ``<answer>N</answer>``
        (:func:`medkit.lm.generate.generate`, chat template); ``mode="scored"``: the digit-probability
        score of the module docstring (one forward pass per prompt, never a format failure unless the
        digits get less than ``min_mass`` of the probability)."""
        if mode == "scored":
            return cls(score_fn=digit_scorer(model, tok, min_mass=min_mass), batch_size=batch_size)
        if mode != "generate":
            raise ValueError(f"LLM judge mode must be generate or scored, got {mode!r}")

        def gen(prompts: list[str]) -> list[str]:
            from ..lm.generate import chat_prompt, generate

            chats = [chat_prompt(tok, p) for p in prompts]
            return list(generate(model, tok, chats, max_new_tokens=max_new_tokens, do_sample=False).texts)

        return cls(gen, batch_size=batch_size)

    @property
    def reason(self) -> bool:
        """Whether prompts ask for reasoning first (free generation) or for the answer tag only."""
        return self.score_fn is None

    def __call__(self, cases: Sequence[dict], records: Sequence[dict], kb) -> list[dict]:
        out, jobs = [], []
        for i, (c, r) in enumerate(zip(cases, records)):
            applicable = rule_rubric(c, r, kb)       # only for which items apply to this case
            out.append({"judge": self.name, **dict.fromkeys(RUBRIC), "failed": [], "replies": {}})
            jobs += [(i, k, judge_prompt(k, c, r, kb, reason=self.reason)) for k in RUBRIC
                     if applicable[k] is not None]
        for s in range(0, len(jobs), self.batch_size):
            part = jobs[s:s + self.batch_size]
            prompts = [p for _, _, p in part]
            if self.score_fn is not None:
                scored = list(self.score_fn(prompts))
            else:
                scored = [(parse_level(t if isinstance(t, str) else ""), t if isinstance(t, str) else "")
                          for t in self.generate_fn(prompts)]
            if len(scored) != len(part):
                raise ValueError(f"the judge's model returned {len(scored)} replies for {len(part)} prompts")
            for (i, k, _), (lvl, text) in zip(part, scored):
                self.stats["calls"] += 1
                out[i]["replies"][k] = text        # kept for a person to audit the judge (SAGE validates by hand)
                if lvl is None:
                    self.stats["parse_failures"] += 1
                    out[i]["failed"].append(k)
                else:
                    out[i][k] = lvl / LEVELS
        return out


def digit_scorer(model, tok, *, min_mass: float = 0.1):
    """``prompts -> [(level or None, audit text)]``: G-Eval digit scoring (module docstring).

    Each prompt is chat-rendered, the assistant turn opened with ``<answer>``; the level
    is sum_i i * p(i) / sum_i p(i) over the digit tokens ``0..LEVELS`` at the next position.
    """
    import torch

    from ..lm.generate import chat_prompt, position_ids

    digits = [tok(str(i), add_special_tokens=False)["input_ids"] for i in range(LEVELS + 1)]
    if any(len(d) != 1 for d in digits) or len({d[0] for d in digits}) != len(digits):
        raise ValueError("scored judging needs a tokenizer with one token per digit 0..4")
    ids = torch.tensor([d[0] for d in digits])

    def score(prompts: list[str]) -> list[tuple[float | None, str]]:
        texts = [chat_prompt(tok, p) + "<answer>" for p in prompts]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        dev = next(model.parameters()).device
        attn = enc["attention_mask"].to(dev)
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"].to(dev), attention_mask=attn,
                           position_ids=position_ids(attn)).logits[:, -1].float()   # left padding: last = next
        p = torch.softmax(logits, -1)[:, ids.to(dev)].cpu()
        out = []
        for row in p:
            mass = float(row.sum())
            dist = row / max(mass, 1e-12)
            level = float((dist * torch.arange(LEVELS + 1)).sum())
            text = f"p(0..{LEVELS}) = [{', '.join(f'{x:.2f}' for x in dist.tolist())}], digit mass {mass:.2f}"
            out.append((level if mass >= min_mass else None, text))
        return out

    return score


def make_judge(kind: str | None, lm=None, **kw):
    """``"rule"`` -> :class:`RuleJudge`; ``"llm"`` -> :class:`LLMJudge` on ``lm=(model, tok)``; ``None``/"none" -> None."""
    if kind in (None, "none"):
        return None
    if kind == "rule":
        return RuleJudge()
    if kind == "llm":
        if lm is None:
            raise ValueError("judge 'llm' needs a language model (lm=(model, tokenizer))")
        return LLMJudge.from_model(*lm, **kw)
    raise ValueError(f"judge must be rule / llm / none, got {kind!r}")


def attach_rubric(records: list[dict], cases: Sequence[dict], kb, judge) -> list[dict]:
    """Score every record with ``judge`` and store it as ``record["rubric"]`` (in place; returns records)."""
    if judge is None:
        return records
    for r, rub in zip(records, judge(cases, records, kb)):
        r["rubric"] = rub
    return records
