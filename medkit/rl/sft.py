"""Supervised fine-tuning on (prompt, response) pairs: NLL on response tokens only."""

from __future__ import annotations

import random

import torch

from .common import MetricsLog, autocast, load_checkpoint, make_accelerator, save_checkpoint
from .losses import aggregate
from .sft_config import SFTConfig


def sft_loss(logprobs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over response tokens; ``(B, T)`` in."""
    return aggregate(-logprobs, response_mask, "token-mean")


def sft(model, tok, prompts: list[str], responses: list[str], cfg: SFTConfig) -> dict:
    """Train ``model`` (usually LoRA-wrapped) to produce ``responses`` after ``prompts``.

    Prompts should already be chat-rendered (:func:`medkit.lm.chat_prompt`). With
    ``cfg.resume`` it continues from ``cfg.out_dir``'s checkpoint. Returns ``{"step", "loss"}``.
    """
    return sft_examples(model, tok, [[(p, False), (r, True)] for p, r in zip(prompts, responses)], cfg)


def sft_examples(model, tok, examples: list[list[tuple[str, bool]]], cfg: SFTConfig) -> dict:
    """:func:`sft` on examples of ``(text, trained)`` segments (:func:`medkit.lm.encode_segments`),
    e.g. whole packed dialogues (:func:`medkit.lm.pack_turns`); a batch is ``cfg.batch_size`` examples."""
    from ..lm.generate import encode_segments, forward_token_stats

    acc = make_accelerator(cfg.grad_accum, cfg.device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    start = 0
    state = load_checkpoint(cfg.out_dir, model, opt) if cfg.resume else None
    if state is not None:
        start = state["step"]
    model, opt = acc.prepare(model, opt)
    log = MetricsLog(cfg.out_dir)
    rng = random.Random(cfg.seed + start)          # resume draws fresh, reproducible batches
    loss_v = float("nan")
    for step in range(start, cfg.steps):
        for _ in range(cfg.grad_accum):
            idx = rng.sample(range(len(examples)), min(cfg.batch_size, len(examples)))
            seq, attn, resp = encode_segments(tok, [examples[i] for i in idx], max_len=cfg.max_len,
                                              device=acc.device)
            with acc.accumulate(model), autocast(acc.device):
                lp = forward_token_stats(model, seq, attn)["logprobs"]
                loss = sft_loss(lp, resp)
                acc.backward(loss)
                opt.step()
                opt.zero_grad()
        loss_v = float(loss.detach())
        log.log({"loop": "sft", "step": step + 1, "loss": loss_v})
        if cfg.save_every and (step + 1) % cfg.save_every == 0:
            save_checkpoint(cfg.out_dir, acc.unwrap_model(model), opt, step + 1, cfg)
    save_checkpoint(cfg.out_dir, acc.unwrap_model(model), opt, max(cfg.steps, start), cfg)
    return {"step": max(cfg.steps, start), "loss": loss_v}
