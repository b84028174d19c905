"""Constrained decoding over one KV cache with rows of different lengths (medkit.lm.constrained)."""

from __future__ import annotations

import pytest
import torch

from medkit.lm.constrained import BatchStreams, Constraint, TokenTrie, decode_step


@pytest.fixture(scope="module")
def lm():
    from medkit.dialogue.policy import build_vocab, word_tokenizer
    from medkit.lm import tiny_causal_lm

    tok = word_tokenizer(build_vocab(["a b c d e f g h i j k"]))
    return tiny_causal_lm(tok, layers=2, hidden=32, heads=2, seed=0)


def test_padded_rows_see_exactly_what_an_unpadded_forward_sees(lm):
    """Chunks of different lengths are left padded in the middle of the stream; positions and the
    mask make every row's logits equal those of its own unpadded sequence."""
    model, _ = lm
    g = torch.Generator().manual_seed(0)
    chunks = [[torch.randint(4, 20, (n,), generator=g).tolist() for n in ns] for ns in ([5, 1, 3], [2, 4, 1])]
    bs = BatchStreams(model, 2, pad_id=0)
    for step in range(3):
        logits = bs.extend([chunks[0][step], chunks[1][step]])
    for r in range(2):
        full = sum(chunks[r], [])
        with torch.no_grad():
            ref = model(torch.tensor([full])).logits[0, -1]
        assert torch.allclose(logits[r], ref, atol=1e-4)
        assert bs.streams[r] == full
    bs.select([1])                                      # dropping a row keeps the other's cache intact
    nxt = [7, 8]
    out = bs.extend([nxt])
    with torch.no_grad():
        ref = model(torch.tensor([sum(chunks[1], []) + nxt])).logits[0, -1]
    assert torch.allclose(out[0], ref, atol=1e-4)


class _TrieConstraint(Constraint):
    def __init__(self, trie, eos):
        self.trie, self.node, self.eos, self.done, self.out = trie, trie.root, eos, False, []

    def allowed(self):
        return list(self.node.children) + ([self.eos] if self.node.end is not None else [])

    def advance(self, t):
        if t == self.eos:
            self.done = True
        else:
            self.node = self.node.children[t]
            self.out.append(t)


def test_decode_emits_only_legal_strings_and_forced_tokens_cost_no_call(lm):
    model, _ = lm
    trie = TokenTrie([[5, 6, 7, 8, 9], [5, 6, 10], [11, 12, 13, 14]])
    assert trie.allowed(trie.root, {2}) == [11] and sorted(trie.allowed(trie.root, None)) == [5, 11]
    bs = BatchStreams(model, 3, pad_id=0)
    cons = [_TrieConstraint(trie, eos=1) for _ in range(3)]
    emitted, decisions, carry = decode_step(bs, [0, 1, 2], [[4, 4], [4], [4, 4, 4]], cons, greedy=False,
                                            generator=torch.Generator().manual_seed(1), temperature=2.0)
    for c, e, d in zip(cons, emitted, decisions):
        assert c.done and c.out in trie.sequences and e == c.out + [1]
        # branch points only: the first token (5 or 11) and, after 5 6, (7 or 10); the end when a string
        # is a prefix of nothing else is forced
        assert 1 <= len(d) <= 2 and all(x.chosen in x.allowed and len(x.allowed) > 1 for x in d)
        assert all(x.logprob <= 0 and x.entropy >= 0 for x in d)
    assert bs.calls <= 3                              # one call per branch point, not per token
    # decision positions index the stream: the chosen token sits there once its carry is fed
    bs.extend([carry[0], carry[1], carry[2]])
    for r in range(3):
        for x in decisions[r]:
            assert bs.streams[r][x.position] == x.chosen
