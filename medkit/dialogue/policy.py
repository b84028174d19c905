"""LM doctors: the dialogue as a token stream, constrained decoding, build / save / load.

The doctor sees the dialogue as one plain-text stream, the same for every model::

    P: 45-year-old female. I've come in because of chest pain.
    D: ASK: fever<eos>
    P: No, I don't think so.
    D: EXAM: 12-lead ECG<eos>
    R: 12-lead ECG: ST elevation.
    D: DIAGNOSIS: Acute myocardial infarction; Unstable angina; Pericarditis<eos>

``P:`` lines are the patient, ``R:`` lines test results, ``D:`` lines the doctor's
actions, each ended by the tokenizer's EOS token. A doctor turn is decoded under the
grammar of legal actions (:mod:`medkit.dialogue.grammar`, :mod:`medkit.lm.constrained`):
format errors and invented conditions cannot happen. The stream has no system prompt
and no chat template: it is short (about 16 tokens a turn with SmolLM2's tokenizer),
which is what makes CPU training and evaluation affordable, and the model learns the
format from supervised fine-tuning on the oracle's dialogues, rendered by the same
function (:func:`doctor_stream`) that decoding extends turn by turn, so training and
decoding see identical token ids.

Models (``ModelConfig.name``):

- ``"tiny"``: a random-init 2-layer Llama (:func:`medkit.lm.tiny_causal_lm`) over a
  word-level vocabulary built from the knowledge base and demonstration text (the
  CPU / test default). SFT fine-tunes all its weights.
- ``"smollm2-135m-instruct"`` or a local HF folder: SFT fully (``sft_lora: null``) or
  through a LoRA adapter (merged after SFT).

RL stages add a fresh LoRA adapter (``rl_lora``) on the SFT weights, so "the
reference policy = adapter disabled" (medkit.rl convention) is the SFT model.
A stage is saved as a model folder: the model config, the vocabulary, and the chain
of weight layers (full state or LoRA state) to replay on the base model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TINY_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
ROLE_TAG = {"patient": "P", "system": "R"}


@dataclass
class ModelConfig:
    name: str = "tiny"                       # tiny | smollm2-135m-instruct | a local HF model folder
    hidden: int = 128                        # tiny only
    layers: int = 2                          # tiny only
    heads: int = 4                           # tiny only
    sft_lora: dict[str, Any] | None = None   # None: full fine-tuning in SFT; LoRA options otherwise
    rl_lora: dict[str, Any] = field(default_factory=lambda: {
        "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    top_k: int = 3                           # differential length of a DIAGNOSIS
    dtype: str = "float32"
    save_dtype: str = "float32"              # float16: stage weights stored at half size (loaded back as dtype)


# --------------------------------------------------------------------------- tokeniser
def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                    pre_tokenizers.Punctuation(behavior="isolated")])


def build_vocab(texts, extra=()) -> list[str]:
    """Sorted word vocabulary of ``texts`` (split as the word tokeniser splits), plus
    ``extra`` words and the integers 0..100 (ages, confidences)."""
    pre = _pre_tokenizer()
    words = set(extra) | {str(i) for i in range(101)} | {"00"}
    for t in texts:
        words |= {w for w, _ in pre.pre_tokenize_str(t)}
    return sorted(words - set(SPECIALS))


def word_tokenizer(vocab: list[str]):
    """A word-level ``PreTrainedTokenizerFast`` over ``vocab`` with a chat template (left padding)."""
    from tokenizers import Tokenizer, models

    from ..lm.load import _offline, _prepare_tokenizer

    _offline()
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(SPECIALS + list(vocab))}
    core = Tokenizer(models.WordLevel(vocab=ids, unk_token="<unk>"))
    core.pre_tokenizer = _pre_tokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                  bos_token="<bos>", unk_token="<unk>")
    tok.chat_template = TINY_TEMPLATE
    tok = _prepare_tokenizer(tok)
    tok.truncation_side = "left"
    return tok


def kb_texts(kb) -> list[str]:
    """Every phrase a dialogue over ``kb`` can contain (questions, labels, values, test names,
    findings, conditions, the stream's role tags and action keywords)."""
    out = [TINY_TEMPLATE, "P: R: D: ASK: EXAM: DIAGNOSIS: ;"]
    for ev in kb.evidences.values():
        out += [ev.question, ev.say, ev.finding, ev.value]
    out += [q.label for q in kb.questions.values()]
    for t in kb.tests.values():
        out += [t.name, t.normal]
    out += [c.name for c in kb.conditions]
    return [t for t in out if t]


# --------------------------------------------------------------------------- streams
def stream_pieces(env) -> list[tuple[str, bool]]:
    """The dialogue so far as ``(text, is_action)`` pieces (see the module docstring); the
    stream always ends ready for the doctor's next action (``...\nD:``) until the episode
    is over. Action pieces are canonical action texts."""
    out: list[tuple[str, bool]] = []
    rows = env.transcript
    out.append((f"P: {env.intro} {rows[0]['text']}\nD:", False))
    for row in rows[1:]:
        if row["role"] == "doctor":
            out.append((row["text"], True))
        else:
            out.append((f"\n{ROLE_TAG.get(row['role'], 'P')}: {row['text']}\nD:", False))
    return out


def doctor_stream(env, grammar) -> tuple[list[int], list[int]]:
    """``(token ids, action mask)`` of the dialogue so far: actions tokenised by
    :meth:`ActionGrammar.encode` (EOS included, mask 1), everything else by the tokenizer (mask 0)."""
    from .grammar import encode_text

    ids: list[int] = []
    mask: list[int] = []
    for text, is_action in stream_pieces(env):
        t = grammar.encode(text) if is_action else encode_text(grammar.tok, text)
        ids += t
        mask += [int(is_action)] * len(t)
    return ids, mask


class ConstrainedDoctor:
    """A causal LM acting as the doctor under the action grammar; ``act_batch(envs)`` decodes one
    turn for each env.

    The envs of one call share a KV cache (:class:`medkit.lm.constrained.BatchStreams`) that
    lives across turns: each turn only the new part of every stream is fed. Play a batch of
    episodes to the end (:func:`medkit.dialogue.rollout.run_episodes` does) and call
    :meth:`reset` after. ``greedy=False`` samples at ``temperature``; with ``record=True`` the
    branch-point decisions of every env are kept for policy-gradient updates (:meth:`trace`).
    """

    def __init__(self, model, tok, *, top_k: int = 3, greedy: bool = True, temperature: float = 1.0,
                 record: bool = False, seed: int | None = None):
        import torch

        self.model, self.tok, self.top_k = model, tok, top_k
        self.greedy, self.temperature, self.record = greedy, temperature, record
        self.generator = None
        if seed is not None:
            self.generator = torch.Generator().manual_seed(seed)
        self._grammars: dict[int, object] = {}
        self._sessions: list[tuple[object, list[int]]] = []   # (BatchStreams, env ids in row order)
        self._traces: dict[int, list] = {}
        self.stats = {"turns": 0, "calls": 0, "fed_tokens": 0, "seconds": 0.0}

    def grammar(self, kb):
        from .grammar import ActionGrammar

        g = self._grammars.get(id(kb))
        if g is None:
            g = self._grammars[id(kb)] = ActionGrammar(kb, self.tok, top_k=self.top_k)
        return g

    def _session(self, envs):
        from ..lm.constrained import BatchStreams

        ids = [id(e) for e in envs]
        for k, (sess, rows) in enumerate(self._sessions):
            if set(ids) <= set(rows):
                sess.select([rows.index(i) for i in ids])   # finished episodes leave the cache
                self._sessions[k] = (sess, ids)
                return sess
        # a new batch (or one mixing sessions): start a fresh cache for these envs
        self._sessions = [(s, r) for s, r in self._sessions if set(r).isdisjoint(ids)]
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        sess = BatchStreams(self.model, len(envs), pad)
        self._sessions.append((sess, ids))
        return sess

    def act_batch(self, envs) -> list[str]:
        import time

        from ..lm.constrained import decode_step

        t0 = time.perf_counter()
        sess = self._session(envs)
        calls0, fed0 = sess.calls, sess.fed_tokens
        contexts, cons = [], []
        for r, env in enumerate(envs):
            g = self.grammar(env.kb)
            full, _ = doctor_stream(env, g)
            fed = sess.streams[r]
            if full[: len(fed)] != fed:
                raise RuntimeError(f"case {env.case.get('case_id')}: the dialogue no longer extends what was fed")
            contexts.append(full[len(fed):])
            cons.append(g.constraint(env))
        _, decisions, _ = decode_step(sess, list(range(len(envs))), contexts, cons, greedy=self.greedy,
                                      temperature=self.temperature, generator=self.generator)
        if self.record:
            for env, d in zip(envs, decisions):
                self._traces.setdefault(id(env), []).extend((env.turns, x) for x in d)
        self.stats["turns"] += len(envs)
        self.stats["calls"] += sess.calls - calls0
        self.stats["fed_tokens"] += sess.fed_tokens - fed0
        self.stats["seconds"] += time.perf_counter() - t0
        return [c.text() for c in cons]

    def act(self, env) -> str:
        return self.act_batch([env])[0]

    def trace(self, env) -> tuple[list[int], list[int], list]:
        """``(stream ids, action mask, [(turn (0-based), Decision), ...])`` of a finished episode:
        its whole token stream and the branch-point decisions of its doctor turns (``record=True``)."""
        ids, mask = doctor_stream(env, self.grammar(env.kb))
        return ids, mask, list(self._traces.get(id(env), []))

    def reset(self) -> None:
        """Drop every KV cache and recorded trace (call after a batch of episodes)."""
        self._sessions, self._traces = [], {}


# --------------------------------------------------------------------------- models
def build_base(cfg: ModelConfig, vocab: list[str] | None = None, *, seed: int = 0, device: str = "cpu"):
    """The pre-SFT model and tokenizer: ``(model, tok)``."""
    if cfg.name == "tiny":
        from ..lm.load import tiny_causal_lm

        if vocab is None:
            raise ValueError("the tiny model needs a vocabulary (build_vocab)")
        tok = word_tokenizer(vocab)
        model, tok = tiny_causal_lm(tok, layers=cfg.layers, hidden=cfg.hidden, heads=cfg.heads, seed=seed)
        return model.to(device), tok
    from ..lm.load import load_causal_lm

    model, tok = load_causal_lm(cfg.name, dtype=cfg.dtype, device=device)
    tok.truncation_side = "left"
    return model, tok


def strip_value_head(state: dict) -> dict:
    return {k: v for k, v in state.items() if "value_head" not in k}


def apply_layer(model, layer: dict):
    """Replay one saved weight layer on ``model``: a full state, or a LoRA adapter (merged)."""
    import torch

    if layer["lora"] is None:
        own = dict(model.named_parameters())
        with torch.no_grad():
            for n, v in layer["state"].items():
                own[n].copy_(v.to(own[n].device, own[n].dtype))
        return model
    from ..lm.lora import add_lora, load_trainable_state_dict

    model = add_lora(model, dict(layer["lora"]))
    load_trainable_state_dict(model, layer["state"])
    return model.merge_and_unload()


def save_policy(path: str | Path, cfg: ModelConfig, vocab: list[str] | None, layers: list[dict], meta: dict) -> Path:
    """Write a stage as a model folder (docs/contract.md): ``config.yaml`` (the
    :class:`ModelConfig`), ``model.safetensors`` (layer ``i``'s tensors as ``layers.{i}.{name}``)
    and ``assets.json`` (the vocabulary, each layer's LoRA options, ``meta``). ``path`` is
    the folder (a trailing ``policy.pt`` from older callers is dropped)."""
    from ..runs import save_model_folder

    path = Path(path)
    if path.suffix == ".pt":
        path = path.parent
    import torch

    store = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[cfg.save_dtype]
    weights = {f"layers.{i}.{n}": (v.to(store) if v.is_floating_point() else v)
               for i, layer in enumerate(layers) for n, v in layer["state"].items()}
    assets = {"vocab": vocab, "meta": meta,
              "layers": [{"lora": layer["lora"], "keys": sorted(layer["state"])} for layer in layers]}
    save_model_folder(path, config=cfg, weights=weights, component="dialogue", assets=assets,
                      metrics={"stage": meta.get("stage")})
    return path


def load_policy(path: str | Path, *, device: str = "cpu"):
    """``(model, tok, cfg, layers, vocab)`` from a stage's model folder (``policy.pt`` in the path
    is accepted and means its folder). No pickle is executed."""
    from ..runs import load_model_source, pick_device

    path = Path(path)
    if path.name == "policy.pt":
        path = path.parent
    src = load_model_source(path, ModelConfig, component="dialogue")
    layers = [{"lora": spec["lora"], "state": {k: src.weights[f"layers.{i}.{k}"] for k in spec["keys"]}}
              for i, spec in enumerate(src.assets.get("layers", []))]
    meta = src.assets.get("meta", {})
    model, tok = build_base(src.cfg, src.assets.get("vocab"), seed=meta.get("seed", 0), device="cpu")
    for layer in layers:
        model = apply_layer(model, layer)
    return model.to(pick_device(device)).eval(), tok, src.cfg, layers, src.assets.get("vocab")


def load_model(folder: str | Path, *, device: str = "cpu"):
    """The component contract's loader: ``(model, cfg)`` (see :func:`load_policy` for the tokenizer)."""
    model, _, cfg, _, _ = load_policy(folder, device=device)
    return model, cfg


def make_doctor(model, tok, cfg: ModelConfig, **kw) -> ConstrainedDoctor:
    """A :class:`ConstrainedDoctor` with ``cfg``'s differential length (greedy unless ``greedy=False``)."""
    return ConstrainedDoctor(model, tok, top_k=cfg.top_k, **kw)


def frozen_copy(model):
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
