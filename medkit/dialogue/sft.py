"""Supervised fine-tuning of the doctor on the oracle's dialogues, with the fit measured as it goes.

An example is one whole oracle dialogue rendered as the doctor's token stream
(:func:`medkit.dialogue.policy.doctor_stream`); the loss is the mean negative
log-likelihood of the doctor's action tokens (EOS included). Logits are computed only
at those positions: the 49k-word output layer of SmolLM2 is a fifth of its forward
cost, and most positions are the patient's words.

The fit is measured the way the doctor is used: **action agreement** is the share of
the oracle's turns that greedy constrained decoding would reproduce given the oracle's
dialogue so far (teacher forcing), i.e. at every branch point of the action's token
path (:mod:`medkit.lm.constrained`) the legal token of largest probability is the
oracle's. ``first_action_agreement`` counts the first turn of each dialogue only;
``diagnosis_agreement`` the final diagnosis turn. One forward pass per dialogue gives
all of them.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch


# --------------------------------------------------------------------------- examples
def replay_example(case: dict, kb, actions: list[str], grammar, *, patient: str = "persona",
                   max_turns: int = 10) -> dict:
    """The SFT example of one demonstrated dialogue: replay ``actions`` on ``case`` (the patient
    simulators are deterministic, so the transcript is the oracle's) and record the stream and
    every branch point of every action.

    Returns ``{"case_id", "ids", "mask", "branches"}``; ``branches[t]`` lists turn t's
    ``(position, allowed tokens, oracle token)``; ``first_end[t]`` is where turn t's first segment
    (the kind and the first item: the final diagnosis' first name) ends. Raises ValueError when an action is not
    legal under ``grammar`` at its turn (the demonstration and the grammar disagree)."""
    from .env import DialogueEnv
    from .policy import doctor_stream
    from .rollout import make_patient

    env = DialogueEnv(case, make_patient(patient, case, kb), kb, max_turns=max_turns)
    branches, first_end = [], []
    for a in actions:
        text = grammar.canonical(a)
        start = len(doctor_stream(env, grammar)[0])
        first_end.append(start + len(grammar.first.sequences[grammar.parse(text)[0]]))
        c = grammar.constraint(env)
        turn = []
        for k, t in enumerate(grammar.encode(text)):
            allowed = c.allowed()
            if t not in allowed:
                raise ValueError(f"case {case['case_id']} turn {env.turns + 1}: {text!r} is not legal there")
            if len(allowed) > 1:
                turn.append((start + k, tuple(allowed), t))
            c.advance(t)
        branches.append(turn)
        env.step(text)
    ids, mask = doctor_stream(env, grammar)
    return {"case_id": case["case_id"], "ids": ids, "mask": mask, "branches": branches, "first_end": first_end}


def _body_head(model):
    """(transformer body, output layer) of a causal LM, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model, base.lm_head


def _pad(batch: list[list[int]], pad: int):
    T = max(len(x) for x in batch)
    ids = torch.full((len(batch), T), pad, dtype=torch.long)
    att = torch.zeros(len(batch), T, dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, T - len(x):] = torch.tensor(x)
        att[i, T - len(x):] = 1
    return ids, att, [T - len(x) for x in batch]


def hidden_states(model, batch: list[list[int]], pad: int):
    """``(B, T, H)`` last hidden states of left-padded ``batch`` and the pad offsets."""
    body, _ = _body_head(model)
    dev = next(model.parameters()).device
    ids, att, off = _pad(batch, pad)
    pos = (att.cumsum(1) - 1).clamp(min=0)
    h = body(input_ids=ids.to(dev), attention_mask=att.to(dev), position_ids=pos.to(dev)).last_hidden_state
    return h, off


def sft_loss(model, examples: list[dict], pad: int) -> tuple[torch.Tensor, int]:
    """Mean NLL of the action tokens of ``examples`` (``(loss, n_tokens)``), logits only where needed."""
    _, head = _body_head(model)
    h, off = hidden_states(model, [e["ids"] for e in examples], pad)
    rows, cols, tgt = [], [], []
    for b, e in enumerate(examples):
        for t in range(1, len(e["ids"])):
            if e["mask"][t]:
                rows.append(b)
                cols.append(off[b] + t - 1)
                tgt.append(e["ids"][t])
    logits = head(h[torch.tensor(rows), torch.tensor(cols)]).float()
    return torch.nn.functional.cross_entropy(logits, torch.tensor(tgt, device=logits.device)), len(tgt)


@torch.no_grad()
def agreement(model, examples: list[dict], pad: int, *, batch_size: int = 8) -> dict:
    """Teacher-forced agreement of greedy constrained decoding with the demonstrations (module doc).

    Returns ``{"first_action", "action", "diagnosis", "diagnosis_top1", "n_dialogues", "n_turns"}``
    (shares in [0, 1]; ``diagnosis_top1``: the final diagnosis' first name only)."""
    _, head = _body_head(model)
    was = model.training
    model.eval()
    first, turns, diag, top1 = [], [], [], []
    examples = sorted(examples, key=lambda e: len(e["ids"]))     # similar lengths: little padding
    for s in range(0, len(examples), batch_size):
        part = examples[s:s + batch_size]
        h, off = hidden_states(model, [e["ids"] for e in part], pad)
        for b, e in enumerate(part):
            oks, head_ok = [], True
            for t, turn in enumerate(e["branches"]):
                ok = True
                for pos, allowed, tok in turn:
                    lg = head(h[b, off[b] + pos - 1]).float()
                    al = torch.tensor(allowed, device=lg.device)
                    if int(al[int(torch.argmax(lg[al]))]) != tok:
                        ok = False
                        if t == len(e["branches"]) - 1 and pos < e.get("first_end", [10**9] * (t + 1))[t]:
                            head_ok = False
                        break
                oks.append(ok)
            first.append(oks[0])
            turns += oks
            diag.append(oks[-1])
            top1.append(oks[-1] or head_ok)
    model.train(was)
    n = len(examples)
    return {"first_action": sum(first) / max(n, 1), "action": sum(turns) / max(len(turns), 1),
            "diagnosis": sum(diag) / max(n, 1), "diagnosis_top1": sum(top1) / max(n, 1), "n_dialogues": n,
            "n_turns": len(turns)}


# --------------------------------------------------------------------------- training
@dataclass
class SFTLoopConfig:
    steps: int = 300
    batch_size: int = 8              # dialogues per step
    lr: float = 1e-4
    warmup: int = 20                 # linear warm-up steps, then cosine decay to lr_min_ratio * lr
    lr_min_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    train_layers: int | None = None  # full fine-tuning: only the top N transformer blocks (None: all)
    train_embeddings: bool = False   # full fine-tuning: also the (tied input/output) embedding matrix
    eval_every: int = 50             # agreement on eval_n training and validation dialogues
    eval_n: int = 64
    save_every: int = 100            # resume checkpoint period (0: none)
    seed: int = 0


def lr_at(step: int, cfg: SFTLoopConfig) -> float:
    """Learning rate of (0-based) ``step``: linear warm-up over ``warmup`` steps, then cosine
    from ``lr`` to ``lr_min_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    frac = min((step - cfg.warmup) / span, 1.0)
    return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def freeze_lower(model, train_layers: int | None, train_embeddings: bool = False) -> None:
    """Prepare full fine-tuning: the top ``train_layers`` transformer blocks (None: all) and the
    final norm train; the embedding matrix (SmolLM2 ties it to the output layer: 28M of its 135M
    parameters) stays frozen unless ``train_embeddings``: a few thousand dialogues cannot
    improve a 49k-word embedding, and its dense gradient and optimizer state cost a fifth of a step."""
    body, head = _body_head(model)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = body.layers if train_layers is None else body.layers[len(body.layers) - train_layers:]
    for layer in layers:
        for p in layer.parameters():
            p.requires_grad_(True)
    for p in body.norm.parameters():
        p.requires_grad_(True)
    if train_embeddings:
        for p in list(body.embed_tokens.parameters()) + list(head.parameters()):
            p.requires_grad_(True)


def length_batches(examples: list[dict], k: int, rng: random.Random):
    """Endless batches of ``k`` examples of similar length: every epoch the length-sorted list is cut
    into consecutive chunks (from a random offset) and the chunks are shuffled, so each example is
    seen once per epoch. Left padding to the longest of a random batch wastes ~40 % of the compute
    at batch 8; within a chunk lengths differ little."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["ids"]))
    while True:
        off = rng.randrange(k)
        chunks = [order[max(0, s - off): s - off + k] for s in range(0, len(order) + off, k)]
        chunks = [c for c in chunks if c]
        rng.shuffle(chunks)
        for c in chunks:
            yield [examples[i] for i in c]


def train_sft(model, tok, train: list[dict], cfg: SFTLoopConfig, out_dir: str | Path, *,
              evals: dict[str, list[dict]] | None = None, log=None, resume: bool = False) -> dict:
    """Fine-tune ``model`` (its trainable parameters) on ``train`` examples (:func:`replay_example`).

    Logs one row per step to ``<out_dir>/logs/metrics.jsonl`` (loss, lr, seconds) and, every
    ``eval_every`` steps and at the end, the agreement on each set of ``evals`` (name ->
    examples; the first ``eval_n`` of each). Saves ``<out_dir>/checkpoints/last.pt`` (trainable
    weights, optimizer, step, RNG) every ``save_every`` steps; ``resume`` continues from it.
    Returns ``{"step", "loss", "curve": [eval rows]}``.
    """
    from ..lm.lora import load_trainable_state_dict, trainable_state_dict
    from ..rl.common import MetricsLog
    from ..runs import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    mlog = MetricsLog(out_dir)
    ckpt = out_dir / "checkpoints" / "last.pt"
    start = 0
    state = load_checkpoint(ckpt) if resume else None
    if state is not None:
        load_trainable_state_dict(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        torch.set_rng_state(state["torch_rng"])
    rng = random.Random(cfg.seed * 1000003 + start)
    batches = length_batches(train, min(cfg.batch_size, len(train)), rng)
    evals = evals or {}
    curve = [r for r in mlog.read() if r.get("kind") == "eval" and r["step"] <= start]

    def evaluate(step):
        row = {"kind": "eval", "step": step}
        for name, exs in evals.items():
            a = agreement(model, exs[: cfg.eval_n], pad)
            row.update({f"{name}_{k}": v for k, v in a.items() if not k.startswith("n_")})
        mlog.log(row)
        curve.append(row)
        if log:
            log("sft eval " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in row.items() if k != "kind"))

    if start == 0 and evals:
        evaluate(0)
    model.train()
    loss_v = float("nan")
    for step in range(start, cfg.steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        batch = next(batches)
        loss, n_tok = sft_loss(model, batch, pad)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip else torch.tensor(0.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_v = float(loss.detach())
        mlog.log({"kind": "train", "step": step + 1, "loss": loss_v, "lr": lr_at(step, cfg), "tokens": n_tok,
                  "grad_norm": float(gn), "step_s": round(time.perf_counter() - t0, 2)})
        if evals and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
            evaluate(step + 1)
        if cfg.save_every and ((step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps):
            save_checkpoint(ckpt, {"model": trainable_state_dict(model), "optimizer": opt.state_dict(),
                                   "step": step + 1, "torch_rng": torch.get_rng_state()})
    model.eval()
    return {"step": max(cfg.steps, start), "loss": loss_v, "curve": curve}
