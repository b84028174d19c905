"""Chat prompts, batched generation with per-token log-probs/entropies, and scoring.

Alignment convention used across medkit.lm and medkit.rl: every per-token tensor
is ``(B, T)`` aligned with ``sequences`` (prompt + response, left padded), and
entry ``[:, t]`` is about token ``t`` given tokens ``< t`` (entry 0 is 0).
``response_mask`` is 1 exactly on generated (policy) tokens up to and including
the first EOS; prompt and padding are 0, so they contribute nothing to a loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def chat_prompt(tok, user: str | list[dict], system: str | None = None) -> str:
    """Render one chat turn with the tokenizer's chat template and the assistant cue."""
    msgs = list(user) if isinstance(user, list) else [{"role": "user", "content": user}]
    if system is not None:
        msgs = [{"role": "system", "content": system}, *msgs]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def position_ids(attention_mask):
    """``(B, T)`` positions that start at 0 on the first real token (left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Rollout:
    """A batch of generations. All tensors ``(B, T)`` with ``T = P + N`` (prompt + new)."""

    sequences: Any
    attention_mask: Any
    response_mask: Any
    logprobs: Any            # log pi(token) at response positions, 0 elsewhere
    entropies: Any           # entropy of pi(.|prefix) at response positions, 0 elsewhere
    prompt_len: int
    texts: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    def lengths(self):
        return self.response_mask.sum(-1)


def response_mask_from(new_tokens, eos_ids, pad_id=None):
    """``(B, N)`` mask of generated tokens: 1 up to and including the first EOS, 0 after.

    >>> # tokens [5, 2(eos), 0, 0] -> [1, 1, 0, 0]
    """
    import torch

    is_eos = torch.zeros_like(new_tokens, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= new_tokens == e
    # number of EOS strictly before t; keep t while it is 0
    before = torch.cumsum(is_eos.long(), -1) - is_eos.long()
    return (before == 0).long()


def _eos_ids(model, tok) -> list[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def generate(model, tok, prompts: list[str], *, max_new_tokens: int = 32, temperature: float = 1.0,
             top_p: float = 1.0, do_sample: bool = True, max_prompt_len: int | None = None,
             generator_seed: int | None = None) -> Rollout:
    """Sample completions for ``prompts`` (already chat-rendered) in one left-padded batch.

    Log-probs and entropies are of the sampling policy ``softmax(logits / temperature)``
    (before top-p truncation), the distribution PPO/GRPO treat as pi_old.
    """
    import torch

    if generator_seed is not None:
        torch.manual_seed(generator_seed)
    dev = next(model.parameters()).device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False,
              truncation=max_prompt_len is not None, max_length=max_prompt_len)
    enc = {k: v.to(dev) for k, v in enc.items()}
    P = enc["input_ids"].shape[1]
    eos = _eos_ids(model, tok)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                             temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                             top_k=None, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id, eos_token_id=eos)
    model.train(was_training)
    seq = out.sequences
    new = seq[:, P:]
    N = new.shape[1]
    resp = response_mask_from(new, eos)
    logits = torch.stack(out.logits, 1)[:, :N].float() / (temperature if do_sample else 1.0)  # (B, N, V)
    logp_all = torch.log_softmax(logits, -1)
    lp = logp_all.gather(-1, new.unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    B = seq.shape[0]
    zeros = torch.zeros(B, P, device=dev)
    full_resp = torch.cat([torch.zeros(B, P, dtype=torch.long, device=dev), resp], 1)
    attn = torch.cat([enc["attention_mask"].long(), resp], 1)
    texts = tok.batch_decode(new * resp + tok.pad_token_id * (1 - resp), skip_special_tokens=True)
    return Rollout(sequences=seq, attention_mask=attn, response_mask=full_resp,
                   logprobs=torch.cat([zeros, lp * resp], 1), entropies=torch.cat([zeros, ent * resp], 1),
                   prompt_len=P, texts=texts, prompts=list(prompts))


def forward_token_stats(model, sequences, attention_mask, *, temperature: float = 1.0,
                        with_entropy: bool = False, with_values: bool = False, value_trunk_grad: bool = False):
    """Per-token log-probs of ``sequences`` under ``model`` (with grad), aligned ``(B, T)``.

    Returns ``dict(logprobs=(B, T), entropies=(B, T) | None, values=(B, T) | None)``;
    entry ``t`` scores token ``t`` from the logits at ``t - 1`` (entry 0 is 0).
    ``values[:, t]`` is the value-head output on the hidden state at ``t - 1``, i.e. the
    state before emitting token t (so GAE over response tokens lines up with rewards).
    The value head reads a *detached* trunk unless ``value_trunk_grad``: the critic's
    regression loss then trains the head only and cannot pull the policy's adapter
    towards predicting returns (a shared trunk made PPO lower its own reward).
    """
    import torch

    out = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                output_hidden_states=with_values, use_cache=False)
    logits = out.logits[:, :-1].float() / temperature
    logp_all = torch.log_softmax(logits, -1)
    lp = logp_all.gather(-1, sequences[:, 1:].unsqueeze(-1)).squeeze(-1)
    pad = torch.zeros_like(lp[:, :1])
    res = {"logprobs": torch.cat([pad, lp], 1), "entropies": None, "values": None}
    if with_entropy:
        ent = -(logp_all.exp() * logp_all).sum(-1)
        res["entropies"] = torch.cat([pad, ent], 1)
    if with_values:
        head = value_head_of(model)
        h = out.hidden_states[-1][:, :-1]
        h = h if value_trunk_grad else h.detach()
        v = head(h.to(next(head.parameters()).dtype)).squeeze(-1).float()
        res["values"] = torch.cat([pad, v], 1)
    return res


def value_head_of(model):
    """``model.value_head``, also through a DDP / accelerate wrapper (``.module``)."""
    head = getattr(model, "value_head", None)
    if head is None and hasattr(model, "module"):
        head = getattr(model.module, "value_head", None)
    if head is None:
        raise AttributeError("the model has no value head: attach one with medkit.lm.add_value_head")
    return head


def sequence_logprob(model, sequences, attention_mask, response_mask, *, temperature: float = 1.0):
    """``(B,)`` sum of log pi(token) over response tokens (no grad)."""
    import torch

    with torch.no_grad():
        lp = forward_token_stats(model, sequences, attention_mask, temperature=temperature)["logprobs"]
    return (lp * response_mask).sum(-1)


def encode_pairs(tok, prompts: list[str], responses: list[str], *, max_len: int = 512, device=None):
    """Tokenise prompt+response pairs (left padded) with a response mask (for SFT / scoring).

    The response gets the EOS token appended so the model learns to stop.
    Returns ``(sequences, attention_mask, response_mask)``, each ``(B, T)``.
    """
    return encode_segments(tok, [[(p, False), (r, True)] for p, r in zip(prompts, responses)],
                           max_len=max_len, device=device)


def encode_segments(tok, examples: list[list[tuple[str, bool]]], *, max_len: int = 512, device=None):
    """Tokenise examples made of ``(text, trained)`` segments (left padded) with a mask of trained tokens.

    Each segment is tokenised on its own (no merges across a boundary); a trained
    segment gets the EOS token appended. A whole multi-turn dialogue is one
    example: context segments untrained, each assistant turn trained (see
    :func:`pack_turns`). Sequences longer than ``max_len`` keep their last tokens.
    Returns ``(sequences, attention_mask, trained_mask)``, each ``(B, T)``.
    """
    import torch

    rows, masks = [], []
    for segs in examples:
        ids, m = [], []
        for text, trained in segs:
            si = tok(text, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if trained else [])
            ids += si
            m += [int(trained)] * len(si)
        rows.append(ids[-max_len:])
        masks.append(m[-max_len:])
    T = max(len(r) for r in rows)
    seq = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros(len(rows), T, dtype=torch.long)
    resp = torch.zeros(len(rows), T, dtype=torch.long)
    for i, (ids, m) in enumerate(zip(rows, masks)):
        seq[i, T - len(ids):] = torch.tensor(ids)
        attn[i, T - len(ids):] = 1
        resp[i, T - len(ids):] = torch.tensor(m)
    if device is not None:
        seq, attn, resp = seq.to(device), attn.to(device), resp.to(device)
    return seq, attn, resp


def pack_turns(tok, prompts: list[str], responses: list[str]) -> list[tuple[str, bool]] | None:
    """One dialogue's successive (prompt, response) turns as a single segment list, or None.

    Packing needs each prompt to extend the previous prompt + response + EOS text
    exactly (true of chat templates that close an assistant turn with the EOS
    token, e.g. SmolLM2's ``<|im_end|>``); then training on the packed dialogue
    gives the same per-turn losses as the separate turns at a fraction of the
    tokens. Returns None when the chain breaks (train the turns separately).
    """
    eos = tok.eos_token or ""
    segs, seen = [], ""
    for p, r in zip(prompts, responses):
        if not p.startswith(seen):
            return None
        if p[len(seen):]:
            segs.append((p[len(seen):], False))
        segs.append((r, True))
        seen = p + r + eos
    return segs
