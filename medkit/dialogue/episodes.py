"""Sampled doctor episodes for policy-gradient training, and their log-probabilities with gradients.

The policy RL trains is the constrained one: at each branch point of an action's token
path (:mod:`medkit.lm.constrained`) the model's distribution renormalised over the legal
tokens at temperature ``T``; forced tokens have probability 1 and carry no gradient. A
sampled episode keeps its token stream and its decisions; :func:`decision_logprobs`
recomputes their log-probabilities under the current weights in one forward pass per
episode (batched), which is what the clipped surrogate differentiates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Episode:
    """One sampled episode: its record (``DialogueEnv.record()``), token stream, decisions
    (``(turn, Decision)``), reward and group index."""

    record: dict
    ids: list[int]
    mask: list[int]
    decisions: list
    reward: float = 0.0
    group: int = 0

    @property
    def spans(self) -> list[tuple[int, int]]:
        """``[(start, end)]`` token span of each doctor action in ``ids``."""
        return action_spans(self.mask)


def sample_episodes(model, tok, cases: list[dict], kb, *, group_size: int, temperature: float, seed: int,
                    patient: str = "persona", max_turns: int = 10, top_k: int = 3,
                    batch_size: int = 32) -> list[Episode]:
    """Play each case ``group_size`` times with the sampling policy (consecutive episodes form a group)."""
    from .policy import ConstrainedDoctor
    from .rollout import make_envs, run_episodes

    envs = make_envs(cases, kb, patient=patient, max_turns=max_turns, repeat=group_size)
    doc = ConstrainedDoctor(model, tok, top_k=top_k, greedy=False, temperature=temperature, record=True, seed=seed)
    out = []
    for s in range(0, len(envs), batch_size):
        part = envs[s:s + batch_size]
        recs = run_episodes(part, doc)
        for e, r in zip(part, recs):
            ids, mask, dec = doc.trace(e)
            out.append(Episode(r, ids, mask, dec, group=len(out) // group_size))
        doc.reset()
    return out


def decision_logprobs(model, episodes: list[Episode], pad: int, *, temperature: float = 1.0,
                      batch_size: int = 8, with_hidden: bool = False):
    """Per episode, ``(D,)`` log-probabilities of its decisions under ``model`` (with gradients),
    renormalised over each decision's legal tokens at ``temperature``; with ``with_hidden`` also
    the ``(D, H)`` hidden states the decisions were made from (for a critic)."""
    from .sft import _body_head, hidden_states

    _, head = _body_head(model)
    out, hid = [], []
    for s in range(0, len(episodes), batch_size):
        part = episodes[s:s + batch_size]
        h, off = hidden_states(model, [e.ids for e in part], pad)
        for b, e in enumerate(part):
            if not e.decisions:
                out.append(torch.zeros(0, device=h.device))
                hid.append(h.new_zeros(0, h.shape[-1]))
                continue
            rows = h[b, torch.tensor([off[b] + d.position - 1 for _, d in e.decisions], device=h.device)]
            logits = head(rows).float() / temperature
            lps = []
            for k, (_, d) in enumerate(e.decisions):
                al = torch.tensor(d.allowed, device=logits.device)
                lp = torch.log_softmax(logits[k, al], -1)
                lps.append(lp[d.allowed.index(d.chosen)])
            out.append(torch.stack(lps))
            hid.append(rows)
    return (out, hid) if with_hidden else out


def padded(values: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Dmax)`` values and mask from per-episode ``(D_i,)`` tensors (0 off-mask)."""
    n = max((len(v) for v in values), default=0)
    x = torch.zeros(len(values), max(n, 1))
    m = torch.zeros(len(values), max(n, 1))
    for i, v in enumerate(values):
        x[i, :len(v)] = v.detach().float().cpu() if isinstance(v, torch.Tensor) else torch.tensor(v)
        m[i, :len(v)] = 1
    return x, m


def action_token_logprob_sums(model, episodes: list[Episode], pad: int, *, batch_size: int = 8) -> list[list[float]]:
    """Per episode, per doctor turn: the sum of log pi(token) over the action's tokens (EOS
    included) under the full softmax (no grammar), no gradients: the self-reward's terms."""
    from .sft import _body_head, hidden_states

    _, head = _body_head(model)
    out = []
    with torch.no_grad():
        for s in range(0, len(episodes), batch_size):
            part = episodes[s:s + batch_size]
            h, off = hidden_states(model, [e.ids for e in part], pad)
            for b, e in enumerate(part):
                sums = []
                for a, z in e.spans:
                    idx = torch.arange(a, z, device=h.device)
                    lg = torch.log_softmax(head(h[b, off[b] + idx - 1]).float(), -1)
                    tgt = torch.tensor(e.ids[a:z], device=lg.device)
                    sums.append(float(lg.gather(1, tgt[:, None]).sum()))
                out.append(sums)
    return out


def action_spans(ids_mask: list[int]) -> list[tuple[int, int]]:
    """``[(start, end)]`` of each run of 1s in an action mask (one run per doctor turn)."""
    spans, start = [], None
    for i, m in enumerate(ids_mask + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans
