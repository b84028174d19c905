"""Generative judge (Think-RM, arXiv 2505.16265) and its pairwise advantage.

A judge is any local HF causal LM asked to reason, then answer in a strict
format: ``<answer>A</answer>`` / ``<answer>B</answer>`` (pairwise choice) or
``<answer>-3..3</answer>`` (graded preference of A over B). Outputs that do not
parse are counted in ``judge.stats["parse_failures"]`` and returned as None,
never raised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

JUDGE_TEMPLATE = (
    "Question:\n{question}\n\nResponse A:\n{a}\n\nResponse B:\n{b}\n\n"
    "Think step by step about which response is better, then finish with exactly "
    "{fmt}."
)
FORMATS = {"ab": "<answer>A</answer> or <answer>B</answer>",
           "score": "<answer>N</answer> with N an integer from -3 (B much better) to 3 (A much better)"}


def parse_judgement(text: str, mode: str = "ab") -> float | None:
    """Parse the LAST ``<answer>...</answer>`` of ``text``.

    ``mode="ab"``: A -> +1.0, B -> -1.0. ``mode="score"``: integer in -3..3 -> value / 3.
    Anything else (no tag, wrong letter, out of range) -> None.
    """
    # No \s* around the group: with a lazy group they backtrack cubically on whitespace
    # after an unclosed tag (a degenerate generation stalled a loop for minutes).
    found = re.findall(r"<answer>([^<]*)</answer>", text, flags=re.I)
    if not found:
        return None
    ans = found[-1].strip()
    if mode == "ab":
        return {"A": 1.0, "B": -1.0}.get(ans.upper())
    if mode == "score":
        if not re.fullmatch(r"[+-]?\d", ans):
            return None
        v = int(ans)
        return v / 3.0 if -3 <= v <= 3 else None
    raise ValueError(f"mode must be ab / score, got {mode!r}")


_STRICT_AB = re.compile(r"<answer>([AB])</answer>\s*$")


def strict_judgement(text: str) -> float | None:
    """The strict Think-RM format: reasoning, then exactly one ``<answer>A</answer>`` or
    ``<answer>B</answer>`` that ends the output. A -> +1.0, B -> -1.0; anything else (no tag,
    two tags, a tag followed by more text, another letter) -> None, a format failure."""
    if len(re.findall(r"<answer>", text, flags=re.I)) != 1:
        return None
    m = _STRICT_AB.search(text)
    return None if m is None else (1.0 if m.group(1) == "A" else -1.0)


@dataclass
class GenerativeJudge:
    """``judge(question, a, b) -> float | None`` in [-1, 1] (>0: A better), with a local LM."""

    model: object
    tokenizer: object
    mode: str = "ab"
    max_new_tokens: int = 256
    do_sample: bool = False
    stats: dict = field(default_factory=lambda: {"calls": 0, "parse_failures": 0})

    def __call__(self, question: str, a: str, b: str) -> float | None:
        return self.batch([(question, a, b)])[0]

    def batch(self, items: list[tuple[str, str, str]]) -> list[float | None]:
        from ..lm.generate import chat_prompt, generate

        prompts = [chat_prompt(self.tokenizer, JUDGE_TEMPLATE.format(question=q, a=a, b=b, fmt=FORMATS[self.mode]))
                   for q, a, b in items]
        roll = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                        do_sample=self.do_sample)
        out = [parse_judgement(t, self.mode) for t in roll.texts]
        self.stats["calls"] += len(out)
        self.stats["parse_failures"] += sum(v is None for v in out)
        return out


def think_rm_advantages(d: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Think-RM pairwise advantage for one group of G responses.

    Args:
        d: ``(G, G)`` judge preferences, ``d[i, j]`` = how much i beats j (antisymmetric;
            the diagonal is ignored). From scalar rewards use ``d = r[:, None] - r[None, :]``.
    Returns:
        ``(G,)``: ``A_i = mean_{j != i} d_ij / sqrt(sum_{i,j} d_ij^2 / (2 G (G-1)) + eps)``.
    """
    G = d.shape[0]
    off = 1.0 - torch.eye(G, dtype=d.dtype, device=d.device)
    dd = d * off
    mean = dd.sum(1) / (G - 1)
    scale = torch.sqrt((dd ** 2).sum() / (2 * G * (G - 1)) + eps)
    return mean / scale
