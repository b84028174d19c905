"""medkit.lm: loading errors, tiny LM, generation masks/log-probs, reference = adapter off."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch


def test_import_does_not_pull_transformers():
    code = ("import sys, medkit, medkit.lm, medkit.rl\n"
            "bad = [m for m in ('transformers', 'peft', 'accelerate') if m in sys.modules]\nassert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_missing_model_path_is_named(tmp_path):
    from medkit.lm import load_causal_lm

    with pytest.raises(FileNotFoundError, match="nope-model"):
        load_causal_lm(str(tmp_path / "nope-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_causal_lm(str(tmp_path / "empty"))


def test_local_folder_roundtrip(tmp_path):
    from medkit.lm import load_causal_lm, tiny_causal_lm

    m, tok = tiny_causal_lm()
    m.save_pretrained(tmp_path / "tiny")
    tok.save_pretrained(tmp_path / "tiny")
    m2, tok2 = load_causal_lm(str(tmp_path / "tiny"), device="cpu", value_head=True)
    x = torch.tensor([[5, 6, 7]])
    assert torch.allclose(m(x).logits, m2(x).logits)
    assert tok2.padding_side == "left" and hasattr(m2, "value_head")


def test_generate_masks_logprobs_match_forward():
    from medkit.lm import chat_prompt, forward_token_stats, generate, tiny_causal_lm

    torch.manual_seed(0)
    m, tok = tiny_causal_lm()
    prompts = [chat_prompt(tok, "hi"), chat_prompt(tok, "a much longer question here")]
    r = generate(m, tok, prompts, max_new_tokens=6, temperature=1.0, generator_seed=0)
    B, T = r.sequences.shape
    assert r.logprobs.shape == r.entropies.shape == r.response_mask.shape == (B, T)
    assert r.response_mask[:, :r.prompt_len].sum() == 0          # prompt / left padding never counted
    assert (r.logprobs[r.response_mask == 0] == 0).all()
    assert (r.entropies[r.response_mask > 0] > 0).all()
    # the generation-time log-probs equal a fresh forward pass on the sequences (left padding handled)
    f = forward_token_stats(m, r.sequences, r.attention_mask, with_entropy=True)
    mk = r.response_mask > 0
    assert torch.allclose(f["logprobs"][mk], r.logprobs[mk], atol=1e-4)
    assert torch.allclose(f["entropies"][mk], r.entropies[mk], atol=1e-4)


def test_response_mask_stops_after_eos():
    from medkit.lm.generate import response_mask_from

    assert response_mask_from(torch.tensor([[4, 2, 0, 0], [4, 4, 4, 4]]), [2]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]


def test_reference_is_policy_with_adapter_disabled():
    from medkit.lm import reference, tiny_causal_lm

    base, _ = tiny_causal_lm(seed=1)
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        want = base(x).logits.clone()
    m, _ = tiny_causal_lm(seed=1, lora={"lora_dropout": 0.0})
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.add_(0.5)                    # make the adapter non-trivial
        changed = m(x).logits
        with reference(m) as ref:
            ref_logits = ref(x).logits
    assert not torch.allclose(changed, want)
    assert torch.allclose(ref_logits, want, atol=1e-5)


def _eos_closing_tokenizer():
    """The tiny char tokenizer with a template that closes each turn with EOS (like SmolLM2's)."""
    from medkit.lm import tiny_causal_lm

    m, tok = tiny_causal_lm(seed=2)
    tok.chat_template = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}<eos>\n{% endfor %}"
                         "{% if add_generation_prompt %}a:{% endif %}")
    return m, tok


def test_packed_dialogue_trains_the_same_tokens_as_separate_turns():
    from medkit.lm import (
        chat_prompt,
        encode_pairs,
        encode_segments,
        forward_token_stats,
        pack_turns,
    )

    m, tok = _eos_closing_tokenizer()
    msgs = [{"role": "user", "content": "i have a cough"}]
    prompts, responses = [], ["ASK: fever?", "EXAM: chest x-ray", "DIAGNOSIS: pneumonia"]
    for r, reply in zip(responses, ["yes, since monday", "shadow in the right lung", ""]):
        prompts.append(chat_prompt(tok, msgs, None))
        msgs = msgs + [{"role": "assistant", "content": r}, {"role": "user", "content": reply}]
    segs = pack_turns(tok, prompts, responses)
    assert segs is not None and [t for t, trained in segs if trained] == responses
    with torch.no_grad():
        seq, attn, mask = encode_segments(tok, [segs])
        packed = forward_token_stats(m, seq, attn)["logprobs"][mask > 0]
        seq, attn, mask = encode_pairs(tok, prompts, responses)
        separate = forward_token_stats(m, seq, attn)["logprobs"][mask > 0]   # row-major = turn order
    # every response token (and its EOS) is trained once, with the same context, hence the same log-prob
    assert packed.shape == separate.shape == (sum(len(r) + 1 for r in responses),)
    assert torch.allclose(packed, separate, atol=1e-5)


def test_pack_turns_refuses_a_template_that_does_not_close_turns_with_eos():
    from medkit.lm import chat_prompt, pack_turns, tiny_causal_lm

    _, tok = tiny_causal_lm()              # its template ends a turn with a newline, not EOS
    p1 = chat_prompt(tok, [{"role": "user", "content": "hi"}], None)
    p2 = chat_prompt(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ASK: x"},
                           {"role": "user", "content": "no"}], None)
    assert pack_turns(tok, [p1, p2], ["ASK: x", "ASK: y"]) is None


def test_value_head_mlp_starts_at_zero_and_reads_before_each_token():
    import torch

    from medkit.lm import add_value_head, forward_token_stats, tiny_causal_lm

    model, _ = tiny_causal_lm(hidden=32, layers=1)
    add_value_head(model, hidden=16)
    seq = torch.tensor([[5, 6, 7, 8]])
    v = forward_token_stats(model, seq, torch.ones_like(seq), with_values=True)["values"]
    assert v.shape == (1, 4) and torch.equal(v, torch.zeros(1, 4))    # zero-initialised output layer
    torch.nn.init.normal_(model.value_head[-1].weight)
    v = forward_token_stats(model, seq, torch.ones_like(seq), with_values=True)["values"]
    assert v[0, 0] == 0 and (v[0, 1:] != 0).all()                     # entry 0 has no state before it
