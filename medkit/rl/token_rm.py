"""Token-level reward model from minimal edits (arXiv 2406.02756).

Annotators minimally edit a worse response; the token diff between the original
and the edit says which tokens were wrong. Labels (our choice, the paper's exact
loss is a token classifier): tokens deleted or replaced in the ORIGINAL get -1,
tokens inserted or replacing in the EDIT get +1, unchanged tokens 0. The model
(small LM body + per-token linear head) regresses these labels (MSE over response
tokens), so at use time ``r_t`` in roughly [-1, 1] credits each token; these token
rewards replace the single EOS reward in PPO (``rewards`` argument of GAE).
"""

from __future__ import annotations

import difflib

import torch
from torch import nn


def edit_labels(original: list[int], edited: list[int]) -> tuple[list[float], list[float]]:
    """Token labels from a diff: ``(labels_original, labels_edited)``, lengths of the inputs.

    >>> edit_labels([1, 2, 3], [1, 9, 3])   # 2 replaced by 9
    ([0.0, -1.0, 0.0], [0.0, 1.0, 0.0])
    """
    lo, le = [0.0] * len(original), [0.0] * len(edited)
    sm = difflib.SequenceMatcher(a=original, b=edited, autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op in ("delete", "replace"):
            lo[i1:i2] = [-1.0] * (i2 - i1)
        if op in ("insert", "replace"):
            le[j1:j2] = [1.0] * (j2 - j1)
    return lo, le


class TokenRewardModel(nn.Module):
    """Per-token reward ``(B, T) ids -> (B, T)`` = Linear(hidden state of the body).

    ``body`` is any module returning ``last_hidden_state`` (e.g. ``LlamaModel`` / the base of
    a causal LM); the token reward at t reads the hidden state AT t (the token itself and
    its left context), unlike the value head, which reads t - 1.
    """

    def __init__(self, body: nn.Module, hidden: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from ..lm.generate import position_ids

        h = self.body(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask)).last_hidden_state
        return self.head(h).squeeze(-1)


def token_rm_loss(pred: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE between ``(B, T)`` predictions and edit labels over response tokens (mask)."""
    m = mask.to(pred.dtype)
    return (((pred - labels) ** 2) * m).sum() / m.sum().clamp(min=1)


def build_edit_batch(tok, prompts: list[str], originals: list[str], edits: list[str], *, device=None):
    """Tokenise (prompt, original) and (prompt, edited) rows with labels on response tokens.

    Returns ``(ids, attention_mask, response_mask, labels)``, each ``(2N, T)``: first the N
    originals, then the N edits.
    """
    from ..lm.generate import encode_pairs

    ids, attn, resp = encode_pairs(tok, prompts + prompts, originals + edits, device=device)
    labels = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
    N = len(prompts)
    for k in range(N):
        o = ids[k][resp[k] > 0].tolist()
        e = ids[N + k][resp[N + k] > 0].tolist()
        lo, le = edit_labels(o, e)
        labels[k, resp[k] > 0] = torch.tensor(lo, device=ids.device)
        labels[N + k, resp[N + k] > 0] = torch.tensor(le, device=ids.device)
    return ids, attn, resp, labels


def train_token_rm(model: TokenRewardModel, batch, *, steps: int = 100, lr: float = 3e-3) -> list[float]:
    """Full-batch Adam on :func:`token_rm_loss`; returns the loss curve."""
    ids, attn, resp, labels = batch
    return _fit(model, steps, lr, lambda: token_rm_loss(model(ids, attn), labels, resp))


def _fit(model, steps: int, lr: float, loss_fn) -> list[float]:
    """``steps`` full-batch Adam steps on ``loss_fn()``; the loss curve (model left in eval mode)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    curve = []
    model.train()
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss.detach()))
    model.eval()
    return curve


@torch.no_grad()
def token_rewards(model: TokenRewardModel, sequences: torch.Tensor, attention_mask: torch.Tensor,
                  response_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` token rewards on response tokens, 0 elsewhere (PPO's ``rewards``)."""
    return model(sequences, attention_mask).float() * response_mask.float()


class TokenRewardFn:
    """Reward callable for :func:`medkit.rl.train_ppo` from a :class:`TokenRewardModel`.

    ``dense=True``: the ``(B, T)`` token rewards themselves (fine-grained PPO, arXiv 2406.02756;
    GAE credits each token). ``dense=False``: their sum per sequence ``(B,)``, which the loop
    places at EOS: the same reward model with sequence-level credit (the ablation).
    """

    def __init__(self, model: TokenRewardModel, *, dense: bool = True):
        self.model = model.eval()
        self.dense = dense

    def __call__(self, prompts, completions, rollout=None, **kw) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        r = token_rewards(self.model, rollout.sequences.to(dev), rollout.attention_mask.to(dev),
                          rollout.response_mask.to(dev))
        return r if self.dense else r.sum(-1)


class SequenceRewardModel(nn.Module):
    """Scalar reward of a whole response ``(B, T) ids -> (B,)``: a linear head on the body's hidden
    state at the last response token. The standard (sequence-level) reward model, trained with
    the Bradley-Terry loss on (preferred, rejected) pairs (:func:`train_sequence_rm`)."""

    def __init__(self, body: nn.Module, hidden: int):
        super().__init__()
        self.body = body
        self.head = nn.Linear(hidden, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
        from ..lm.generate import position_ids
        from .rewards import last_token_index

        h = self.body(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids(attention_mask)).last_hidden_state
        last = last_token_index(response_mask)
        return self.head(h[torch.arange(h.shape[0], device=h.device), last]).squeeze(-1)


def train_sequence_rm(model: SequenceRewardModel, batch, *, steps: int = 100, lr: float = 3e-3) -> list[float]:
    """Full-batch Adam on the Bradley-Terry loss with the edited response preferred.

    ``batch`` is :func:`build_edit_batch`'s ``(ids, attn, resp, labels)`` (rows: N originals,
    then N edits); labels are not used, only which row is the edit. Returns the loss curve.
    """
    from .preference import bradley_terry_loss

    ids, attn, resp, _ = batch
    N = ids.shape[0] // 2
    def loss():
        r = model(ids, attn, resp)
        return bradley_terry_loss(r[N:], r[:N])

    return _fit(model, steps, lr, loss)


class SequenceRewardFn:
    """Reward callable from a :class:`SequenceRewardModel`: ``(B,)`` scores (placed at EOS by the loop)."""

    def __init__(self, model: SequenceRewardModel):
        self.model = model.eval()

    @torch.no_grad()
    def __call__(self, prompts, completions, rollout=None, **kw) -> torch.Tensor:
        dev = next(self.model.parameters()).device
        return self.model(rollout.sequences.to(dev), rollout.attention_mask.to(dev), rollout.response_mask.to(dev))
