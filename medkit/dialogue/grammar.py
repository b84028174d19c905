"""The doctor's legal actions as a token grammar: format errors and invented conditions are impossible.

A doctor turn is one of (the canonical text the environment receives)::

    ASK: <question label>            a question of the case's knowledge base not asked yet
    EXAM: <test name>                a test of the knowledge base not ordered yet
    DIAGNOSIS: <c1>; <c2>; <c3>      1..top_k distinct conditions of the knowledge base

Each is tokenised the same way everywhere (:meth:`ActionGrammar.encode`): the first
segment (`` ASK: chest pain``, `` DIAGNOSIS: Pneumonia``) as one string, each further
differential name (``; Bronchitis``) as its own piece, then the EOS token. The same
pieces form the token tries that :mod:`medkit.lm.constrained` walks, so supervised
fine-tuning trains exactly the token paths constrained decoding can produce. On the last
allowed turn only a diagnosis is legal (the episode ends there anyway).

Legal means: a question whose evidences are not all known yet and that was not asked
(a repeat can teach nothing; DDXPlus follow-ups of a "no" count as asked), of the
patient's sex; any test not ordered; any condition. The free-text rationale of
:mod:`medkit.dialogue.actions` (``| because: ...``) is not part of the grammar: a
constrained doctor gives none.
"""

from __future__ import annotations

from ..lm.constrained import Constraint, TokenTrie
from .actions import Action, FormatError, norm, parse_action


def encode_text(tok, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens (the one tokenisation used for doctor streams)."""
    return list(tok(text, add_special_tokens=False)["input_ids"])


class ActionGrammar:
    """Legal doctor actions over ``kb`` for tokenizer ``tok`` (see the module docstring)."""

    def __init__(self, kb, tok, *, top_k: int = 3, allow_tests: bool = True):
        self.kb, self.tok, self.top_k = kb, tok, top_k
        self.eos = int(tok.eos_token_id)
        items: list[tuple[str, str, str]] = [("ASK", q.id, q.label) for q in kb.questions.values()]
        if allow_tests:
            items += [("EXAM", tid, t.name) for tid, t in kb.tests.items()]
        items += [("DIAGNOSIS", c.id, c.name) for c in kb.conditions]
        self.items = items
        self.first = TokenTrie([encode_text(tok, f" {k}: {text}") for k, _, text in items])
        self.cond_items = [i for i, it in enumerate(items) if it[0] == "DIAGNOSIS"]
        self.cond_pos = {it[1]: j for j, it in enumerate(items[i] for i in self.cond_items)}
        self.next = TokenTrie([encode_text(tok, f"; {items[i][2]}") for i in self.cond_items])
        self.by_text = {(k, norm(text)): i for i, (k, _, text) in enumerate(items)}
        for k, key, _ in items:  # ids name items too (ASK: E_91, EXAM: ecg, DIAGNOSIS: pneumonia)
            self.by_text.setdefault((k, norm(key)), next(i for i, it in enumerate(items) if it[:2] == (k, key)))
        self.ask_items = {it[1]: i for i, it in enumerate(items) if it[0] == "ASK"}
        self.exam_items = {it[1]: i for i, it in enumerate(items) if it[0] == "EXAM"}
        clash = set(self.next.root.children) & {self.eos}
        if clash:
            raise ValueError("the tokenizer's EOS token starts a differential piece")

    # ------------------------------------------------------------------ legality
    def available(self, env) -> set[int]:
        """Indices of the items legal in ``env``'s current state."""
        out = set(self.cond_items)
        if env.turns + 1 >= env.max_turns:
            return out
        sex = env.case.get("sex")
        asked = set(getattr(env, "asked_q", ()))
        for qid, i in self.ask_items.items():
            q = self.kb.questions[qid]
            if qid in asked or q.sex not in (None, sex):
                continue
            if any(e not in env.known and self.kb.evidences[e].sex in (None, sex) for e in q.evidences):
                out.add(i)
        out |= {i for tid, i in self.exam_items.items() if tid not in env.tests}
        return out

    def constraint(self, env) -> ActionConstraint:
        return ActionConstraint(self, self.available(env))

    # ------------------------------------------------------------------ text <-> tokens
    def parse(self, text: str) -> list[int]:
        """Item indices of a canonical (or any parseable) action text: one for ASK / EXAM, the
        differential for DIAGNOSIS. Raises ValueError for anything outside the grammar."""
        act = parse_action(text)
        if isinstance(act, FormatError):
            raise ValueError(f"not an action ({act.reason}): {text!r}")
        names = act.differential if act.kind == "DIAGNOSIS" else (act.text,)
        out = []
        for n in names[: self.top_k]:
            i = self.by_text.get((act.kind, norm(n)))
            if i is None:
                raise ValueError(f"{act.kind} {n!r} is not a legal item of this knowledge base")
            if i not in out:
                out.append(i)
        return out

    def canonical(self, text: str) -> str:
        """The canonical text of an action (knowledge-base spelling, no confidence, no rationale)."""
        return self.text_of(self.parse(text))

    def text_of(self, idx: list[int]) -> str:
        k = self.items[idx[0]][0]
        return f"{k}: " + "; ".join(self.items[i][2] for i in idx)

    def encode(self, text: str) -> list[int]:
        """Token ids of an action (canonical pieces + EOS), as constrained decoding emits them."""
        idx = self.parse(text)
        ids = list(self.first.sequences[idx[0]])
        for i in idx[1:]:
            ids += self.next.sequences[self.cond_items.index(i)]
        return ids + [self.eos]

    def action(self, text: str) -> Action:
        return parse_action(self.canonical(text))


class ActionConstraint(Constraint):
    """One turn's decoding state in an :class:`ActionGrammar` (``available``: legal item indices)."""

    def __init__(self, g: ActionGrammar, available: set[int]):
        self.g, self.available = g, available
        self.trie, self.node = g.first, g.first.root
        self.chosen: list[int] = []
        self.used_conds: set[int] = set()       # positions in g.cond_items
        self.done = False

    def _avail(self) -> set[int]:
        if self.trie is self.g.first:
            return self.available
        return {j for j in range(len(self.g.cond_items)) if j not in self.used_conds}

    def _item_here(self) -> int | None:
        """The grammar item completed at the current node (None: none / not available)."""
        end = self.node.end
        if end is None or end not in self._avail():
            return None
        return end if self.trie is self.g.first else self.g.cond_items[end]

    def _finish_options(self) -> list[int]:
        item = self._item_here()
        if item is None:
            return []
        opts = [self.g.eos]
        kind = self.g.items[item][0]
        if kind == "DIAGNOSIS" and len(self.chosen) + 1 < self.g.top_k:
            used = self.used_conds | {self.g.cond_pos[self.g.items[item][1]]}
            free = {j for j in range(len(self.g.cond_items)) if j not in used}
            opts += self.g.next.allowed(self.g.next.root, free)
        return opts

    def allowed(self) -> list[int]:
        if self.done:
            return []
        return self.trie.allowed(self.node, self._avail()) + self._finish_options()

    def advance(self, token: int) -> None:
        if token in self.node.children and not self.node.children[token].items.isdisjoint(self._avail()):
            self.node = self.node.children[token]
            return
        item = self._item_here()
        if item is None:
            raise ValueError(f"token {token} is not legal here")
        self.chosen.append(item)
        if self.g.items[item][0] == "DIAGNOSIS":
            self.used_conds.add(self.g.cond_pos[self.g.items[item][1]])
        if token == self.g.eos:
            self.done = True
            return
        self.trie, self.node = self.g.next, self.g.next.root
        if token not in self.node.children:
            raise ValueError(f"token {token} does not start a differential name")
        self.node = self.node.children[token]

    def text(self) -> str:
        if not self.done:
            raise RuntimeError("the action is not complete")
        return self.g.text_of(self.chosen)
