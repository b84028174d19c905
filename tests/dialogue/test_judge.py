"""Judge-scored rubric: rule judge on a hand-made case (hand levels), LLM judge with a fake generate function."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from medkit.dialogue.judge import LLMJudge, RuleJudge, attach_rubric, make_judge, parse_level
from medkit.metrics.dialogue import summarize_episodes

# gastroenteritis (packaged KB): likelihoods include nausea, fever, vomiting (not thyroid_family);
# red flags: blood_in_stool (symptom), hypotension (vital signs finding)
CASE = {"case_id": "hand_1", "age": 40, "sex": "female",
        "diagnosis": {"id": "gastroenteritis", "name": "Infectious gastroenteritis"},
        "chief_complaint": {"evidence": "diarrhoea", "text": "diarrhoea"},
        "evidences": {"symptom": ["diarrhoea", "nausea", "fever", "vomiting"], "history": ["thyroid_family"],
                      "exam": ["hypotension"], "lab": [], "imaging": []},
        "results": {"vital_signs": ["hypotension"]}}


def _record(*rows):
    return {"transcript": [{"role": "patient", "kind": "opening", "text": "I've come in because of diarrhoea."},
                           *rows], "rank": 1, "diagnosed": True, "format_errors": 0, "red_flags_missed": [],
            "red_flags_present": [], "turns": len(rows), "exam_f1": 1.0, "truth": {"id": "gastroenteritis"},
            "predicted": ["gastroenteritis"], "questions": len(rows), "p_true": [0.1, 0.9], "history_recall": None}


def _ask(e, present):
    return {"role": "doctor", "kind": "ask", "text": f"ASK: {e}?", "evidence": e, "present": present}


VITALS = {"role": "doctor", "kind": "exam", "text": "EXAM: Vital signs", "test": "vital_signs",
          "findings": ["hypotension"]}


def test_rule_judge_hand_levels(kb):
    judge = RuleJudge()
    # key history = {nausea, fever, vomiting} (diarrhoea is the complaint, thyroid_family not linked).
    # asked nausea + fever: 2/3 -> 4 * 0.667 = 2.67 -> level 3 -> 0.75 (a "no" answer still counts as asked)
    # red flags asked: blood_in_stool only, 1/2 -> level 2, but hypotension is present and unchecked -> cap 1 -> 0.25
    r1 = _record(_ask("nausea", True), _ask("fever", True), _ask("blood_in_stool", False))
    # + vital signs: both red flags checked -> 2/2 -> level 4 -> 1.0; history 3/3 -> 1.0
    r2 = _record(_ask("nausea", True), _ask("fever", True), _ask("vomiting", True), _ask("blood_in_stool", False),
                 VITALS)
    # nothing asked: history 0, safety 0 (level 0, the cap changes nothing)
    r3 = _record()
    out = judge([CASE] * 3, [r1, r2, r3], kb)
    assert [(o["history_taking"], o["safety"]) for o in out] == [(0.75, 0.25), (1.0, 1.0), (0.0, 0.0)]
    # no key history and a condition without red flags: not applicable (None), not zero
    bare = {**CASE, "diagnosis": {"id": "not_in_kb", "name": "X"}, "red_flags": [],
            "evidences": {"symptom": ["diarrhoea"], "history": []}}
    assert judge([bare], [r1], kb)[0] == {"judge": "rule", "history_taking": None, "safety": None, "failed": []}


def test_parse_level_is_strict_and_takes_the_last_answer():
    assert parse_level("thinking... <answer>3</answer>") == 3
    assert parse_level("<answer>1</answer> on reflection <ANSWER> 4 </ANSWER>") == 4
    for bad in ("3", "<answer>3.5</answer>", "<answer>five</answer>", "<answer>7</answer>", "<answer>-1</answer>", ""):
        assert parse_level(bad) is None, bad


def test_llm_judge_with_a_fake_generate_function(kb):
    prompts_seen = []

    def fake_generate(prompts):
        prompts_seen.extend(prompts)
        # history: a valid answer after reasoning; safety: an answer that does not parse
        return ["The doctor asked two of three. <answer>3</answer>" if "History taking" in p
                else "Quite safe overall. <answer>five</answer>" for p in prompts]

    judge = LLMJudge(fake_generate, batch_size=1)
    recs = [_record(_ask("nausea", True)), _record(_ask("fever", True))]
    attach_rubric(recs, [CASE, CASE], kb, judge)
    assert judge.stats == {"calls": 4, "parse_failures": 2}                 # 2 dialogues x 2 items
    rub = recs[0]["rubric"]
    assert {k: rub[k] for k in ("judge", "history_taking", "safety", "failed")} == {
        "judge": "llm", "history_taking": 0.75, "safety": None, "failed": ["safety"]}
    assert rub["replies"]["safety"] == "Quite safe overall. <answer>five</answer>"     # kept for audit
    p = prompts_seen[0]
    assert "Infectious gastroenteritis" in p and "Doctor: ASK: nausea?" in p and "<answer>N</answer>" in p
    assert "feeling sick" in p and "systolic blood pressure below 90 mmHg (present)" in p   # key history, red flags
    s = summarize_episodes(recs)["rubric"]
    assert s["judge"] == "llm"
    assert s["history_taking"]["mean"] == 0.75 and s["history_taking"]["n"] == 2
    # failures are counted beside n, not scored and not silently dropped
    assert s["safety"]["n"] == 0 and s["safety"]["parse_failures"] == 2 and s["safety"]["not_applicable"] == 0


def test_llm_judge_skips_items_that_do_not_apply_and_checks_reply_count(kb):
    bare = {**CASE, "diagnosis": {"id": "not_in_kb", "name": "X"}, "red_flags": [],
            "evidences": {"symptom": ["diarrhoea", "nausea"], "history": []}}
    calls = []
    judge = LLMJudge(lambda ps: calls.extend(ps) or ["<answer>4</answer>"] * len(ps))
    out = judge([bare], [_record()], kb)
    assert len(calls) == 1 and out[0]["history_taking"] == 1.0 and out[0]["safety"] is None
    with pytest.raises(ValueError, match="replies"):
        LLMJudge(lambda ps: [])([CASE], [_record()], kb)
    assert make_judge("none") is None and isinstance(make_judge("rule"), RuleJudge)
    with pytest.raises(ValueError):
        make_judge("llm")


class _DigitLM(torch.nn.Module):
    """A stand-in causal LM: next-token logits put the given probabilities on the digit tokens
    (and the rest of the mass, if any, on token 0); records the last input token it saw."""

    def __init__(self, tok, probs: dict[int, float]):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.last = len(tok), []
        self.logp = torch.full((self.vocab,), -1e9)
        rest = 1.0 - sum(probs.values())
        if rest > 1e-9:
            self.logp[0] = math.log(rest)
        for d, p in probs.items():
            self.logp[tok(str(d), add_special_tokens=False)["input_ids"][0]] = math.log(p)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        self.last += input_ids[:, -1].tolist()
        B, T = input_ids.shape
        return SimpleNamespace(logits=self.logp.expand(B, T, self.vocab).clone())


def test_scored_llm_judge_is_the_probability_weighted_digit(kb):
    from medkit.lm import tiny_char_tokenizer

    tok = tiny_char_tokenizer()
    lm = _DigitLM(tok, {3: 0.25, 4: 0.25})          # half the mass on the digits, split 3 / 4
    judge = LLMJudge.from_model(lm, tok, mode="scored")
    recs = [_record(_ask("nausea", True))]
    attach_rubric(recs, [CASE], kb, judge)
    rub = recs[0]["rubric"]
    assert rub["history_taking"] == pytest.approx(3.5 / 4) and rub["safety"] == pytest.approx(3.5 / 4)
    assert judge.stats == {"calls": 2, "parse_failures": 0}
    assert "digit mass 0.50" in rub["replies"]["safety"]
    assert set(lm.last) == {tok(">", add_special_tokens=False)["input_ids"][0]}    # the turn opens with <answer>
    # a model that puts (almost) nothing on the digits is a format failure, not a score
    judge = LLMJudge.from_model(_DigitLM(tok, {2: 0.01}), tok, mode="scored")
    out = judge([CASE], [_record(_ask("nausea", True))], kb)
    assert out[0]["history_taking"] is None and out[0]["failed"] == ["history_taking", "safety"]
    with pytest.raises(ValueError, match="mode"):
        LLMJudge.from_model(lm, tok, mode="vibes")
