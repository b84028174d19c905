"""Constrained decoding: token tries over a finite set of legal strings, batched over one KV cache.

Why a trie and not scoring every legal string: a diagnostic doctor has hundreds of
legal actions per turn (every question of the knowledge base, every test, every
condition). Scoring each one is a forward pass over all their tokens (hundreds of
strings x ~6 tokens per turn); walking a token trie costs one forward call per
*branch point* (a position where more than one legal token follows), usually 2-4 per
action, because a run of forced tokens (one legal continuation) is appended without
asking the model. Greedy decoding picks the legal token of largest probability at each
branch point (the standard constrained-decoding rule; not the arg-max over whole
strings); sampling draws from the model's distribution renormalised over the legal
tokens, which is the policy RL trains (:class:`Decision` keeps what it needs).

:class:`BatchStreams` keeps several token streams (one per dialogue) in one KV cache.
Each call appends a chunk per row; rows' chunks differ in length, so a chunk is left
padded with masked positions *in the middle* of the stream. Positions come from the
count of real tokens, so every row sees exactly what an unpadded forward would
(``tests/lm/test_constrained.py`` checks the logits against one).

Shapes: chunk tensors ``(B, L)``; the attention mask ``(B, T)`` over everything fed so
far; logits ``(B, V)`` at each row's last fed token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class TrieNode:
    """One node of a :class:`TokenTrie`: ``children`` token -> node, ``items`` the indices of
    the strings below it (itself included), ``end`` the index of a string ending here."""

    __slots__ = ("children", "items", "end")

    def __init__(self):
        self.children: dict[int, TrieNode] = {}
        self.items: set[int] = set()
        self.end: int | None = None


class TokenTrie:
    """Token-id sequences of a finite set of strings; string ``i`` is item ``i``."""

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root = TrieNode()
        self.sequences = [list(s) for s in sequences]
        for i, ids in enumerate(self.sequences):
            if not ids:
                raise ValueError(f"item {i}: empty token sequence")
            node = self.root
            node.items.add(i)
            for t in ids:
                node = node.children.setdefault(int(t), TrieNode())
                node.items.add(i)
            if node.end is not None:
                raise ValueError(f"items {node.end} and {i} tokenise identically")
            node.end = i

    def allowed(self, node: TrieNode, available: set[int] | None) -> list[int]:
        """Tokens after ``node`` that lead to at least one available item (None: all)."""
        if available is None:
            return list(node.children)
        return [t for t, ch in node.children.items() if not ch.items.isdisjoint(available)]


@dataclass
class Decision:
    """A branch point: ``position`` in the row's stream of the token chosen, the legal
    ``allowed`` tokens there, the ``chosen`` one, its log-probability under the
    renormalised (temperature-scaled) distribution and that distribution's entropy (nats)."""

    position: int
    allowed: tuple[int, ...]
    chosen: int
    logprob: float
    entropy: float


class BatchStreams:
    """Token streams of ``n`` rows in one KV cache (see the module docstring).

    Args:
        model: a Hugging Face causal LM (eval mode; no gradients are taken).
        n: rows. pad_id: the token fed at masked positions.
    """

    def __init__(self, model, n: int, pad_id: int):
        import torch

        self.model, self.pad_id = model, int(pad_id)
        self.device = next(model.parameters()).device
        self.streams: list[list[int]] = [[] for _ in range(n)]
        self.mask = torch.zeros(n, 0, dtype=torch.long, device=self.device)
        self.cache = None
        self.calls = 0
        self.fed_tokens = 0

    @property
    def n(self) -> int:
        return len(self.streams)

    def extend(self, chunks: Sequence[Sequence[int]]):
        """Append ``chunks[r]`` to row r (empty: nothing) in one forward call.

        Returns ``(B, V)`` float logits at each row's last token (rows with an empty chunk:
        undefined; do not use)."""
        import torch

        if len(chunks) != self.n:
            raise ValueError(f"{len(chunks)} chunks for {self.n} rows")
        L = max((len(c) for c in chunks), default=0)
        if L == 0:
            raise ValueError("nothing to feed")
        ids = torch.full((self.n, L), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros(self.n, L, dtype=torch.long)
        for r, c in enumerate(chunks):
            if c:
                ids[r, L - len(c):] = torch.tensor(list(c), dtype=torch.long)
                new_mask[r, L - len(c):] = 1
                self.streams[r].extend(int(t) for t in c)
        ids, new_mask = ids.to(self.device), new_mask.to(self.device)
        mask = torch.cat([self.mask, new_mask], 1)
        # position = number of real tokens before this one in the row (pads repeat a position; masked)
        pos = (mask.cumsum(1) - 1).clamp(min=0)[:, -L:]
        if self.cache is None:
            from transformers import DynamicCache

            self.cache = DynamicCache()
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.cache,
                             use_cache=True, logits_to_keep=1)
        self.mask = mask
        self.calls += 1
        self.fed_tokens += int(new_mask.sum())
        return out.logits[:, -1].float()

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in this order): drop finished dialogues from the cache."""
        import torch

        rows = list(rows)
        if rows == list(range(self.n)):
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.device)
        if self.cache is not None and rows:
            self.cache.batch_select_indices(idx)
        self.mask = self.mask[idx]
        self.streams = [self.streams[r] for r in rows]
        if not rows:
            self.cache = None


class Constraint:
    """What a decoding row may emit next; subclasses define :meth:`allowed` / :meth:`advance`.
    ``done`` turns True when a complete legal string (ending with its terminator) was emitted."""

    done: bool = False

    def allowed(self) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def advance(self, token: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError


def _force(c: Constraint, out: list[int]) -> None:
    """Append the forced run (one legal token at a time) to ``out``."""
    while not c.done:
        a = c.allowed()
        if len(a) != 1:
            return
        c.advance(a[0])
        out.append(a[0])


def decode_step(streams: BatchStreams, rows: Sequence[int], contexts: Sequence[Sequence[int]],
                constraints: Sequence[Constraint], *, greedy: bool = True, temperature: float = 1.0,
                generator=None) -> tuple[list[list[int]], list[list[Decision]], list[list[int]]]:
    """Emit one constrained string for each of ``rows`` of ``streams``.

    Args:
        rows: the rows that act (others are fed nothing). contexts: per acting row, the tokens
            to append before its string (the new part of its prompt, including any tokens
            carried over from the last step). constraints: per acting row, fresh.
        greedy: legal arg-max at each branch point; else sample at ``temperature`` from the
            distribution renormalised over the legal tokens.

    Returns:
        ``(emitted, decisions, carry)``: per acting row the tokens of its string (terminator
        included), its :class:`Decision` list, and the tail of ``emitted`` not yet fed into
        the cache (prepend it to the row's next context).
    """
    import torch

    k = len(rows)
    emitted: list[list[int]] = [[] for _ in range(k)]
    decisions: list[list[Decision]] = [[] for _ in range(k)]
    pending: list[list[int]] = [list(c) for c in contexts]
    for i, c in enumerate(constraints):
        _force(c, emitted[i])
        pending[i] += emitted[i]
    while any(not c.done for c in constraints):
        chunks = [[] for _ in range(streams.n)]
        for i, r in enumerate(rows):
            chunks[r] = pending[i]
        need = [i for i, c in enumerate(constraints) if not c.done]
        for i in need:
            if not pending[i]:
                raise RuntimeError("a row needs a decision but has nothing to condition on")
        logits = streams.extend(chunks)
        pending = [[] for _ in range(k)]
        for i in need:
            c = constraints[i]
            allowed = c.allowed()
            if not allowed:
                raise RuntimeError("constraint allows nothing but is not done")
            lg = logits[rows[i], allowed] / max(temperature, 1e-6)
            lp = torch.log_softmax(lg, -1)
            j = int(torch.argmax(lp)) if greedy else int(torch.multinomial(lp.exp(), 1, generator=generator))
            tok = allowed[j]
            pos = len(streams.streams[rows[i]])     # index the chosen token will have in the stream
            decisions[i].append(Decision(pos, tuple(allowed), tok, float(lp[j]),
                                         float(-(lp.exp() * lp).sum())))
            c.advance(tok)
            start = len(emitted[i])
            emitted[i].append(tok)
            _force(c, emitted[i])
            pending[i] = emitted[i][start:]
    return emitted, decisions, pending
