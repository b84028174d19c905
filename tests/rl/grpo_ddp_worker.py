"""One rank of the two-process GRPO test (launched by ``accelerate launch``; not a test module).

Trains GRPO for a few steps on a tiny LM and writes ``<out>/rank<k>.json``: the prompts this
rank drew each step and the sha256 of its trainable weights at the end."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from medkit.lm import chat_prompt, tiny_causal_lm
from medkit.lm.lora import trainable_parameters
from medkit.rl import GRPOConfig, train_grpo
from medkit.runs import process_rank


def main(out: Path, steps: int) -> None:
    torch.manual_seed(0)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model, tok = tiny_causal_lm(hidden=32, layers=1, lora={"r": 4})
    prompts = [chat_prompt(tok, f"say {i}") for i in range(32)]
    drawn: list[list[int]] = []

    def vowels(prompts_, completions, rollout=None, **kw):
        drawn.append(sorted({prompts.index(p) for p in prompts_}))
        return [sum(ch in "aeiou" for ch in c) / len(c) if c else 0.0 for c in completions]

    cfg = GRPOConfig(out_dir=str(out / "loop"), steps=steps, prompts_per_step=2, group_size=3, max_new_tokens=5,
                     lr=1e-2, device="cpu")
    train_grpo(model, tok, prompts, [vowels], cfg)
    h = hashlib.sha256()
    for name, p in sorted(trainable_parameters(model).items()):
        h.update(name.encode() + p.detach().cpu().numpy().tobytes())
    rank = process_rank()
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "drawn": drawn, "weights_sha256": h.hexdigest()}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
