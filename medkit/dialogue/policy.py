"""LM doctors: prompts, a word-level tokeniser for the tiny test LM, build / save / load.

A doctor turn is one chat completion. The dialogue so far is rendered as a chat:
the patient's turns (and exam results, format reminders) are ``user`` messages,
the doctor's earlier actions ``assistant`` messages, so over a whole episode the
doctor's tokens are exactly the assistant spans (the mask used in training).

Models (``ModelConfig.name``):

- ``"tiny"``: a random-init 2-layer Llama (:func:`medkit.lm.tiny_causal_lm`) over a
  word-level vocabulary built from the knowledge base and demonstration text
  (the CPU / test default; a character vocabulary would need far more steps).
  SFT fine-tunes all its weights.
- ``"smollm2-135m-instruct"`` or a local HF folder: LoRA SFT (``sft_lora``), merged
  into the weights after SFT.

RL stages add a fresh LoRA adapter (``rl_lora``) on the SFT weights, so "the
reference policy = adapter disabled" (medkit.rl convention) is the SFT model.
A stage is saved as ``policy.pt``: the model config, the vocabulary, and the
chain of weight layers (full state or LoRA state) to replay on the base model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCTOR_SYSTEM = ("You are a doctor. Interview the patient, order tests, then diagnose. Reply with one line: "
                 "ASK: <question> or EXAM: <test> or DIAGNOSIS: <name>; <second>; <third> | confidence: <0-1>.")
RATIONALE_SYSTEM = (" End a DIAGNOSIS with | because: <fact>; <fact>, citing only facts the patient or a test "
                    "gave you.")
TINY_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]


@dataclass
class ModelConfig:
    name: str = "tiny"                       # tiny | smollm2-135m-instruct | a local HF model folder
    hidden: int = 128                        # tiny only
    layers: int = 2                          # tiny only
    heads: int = 4                           # tiny only
    sft_lora: dict[str, Any] | None = None   # None: full fine-tuning in SFT (tiny); LoRA options otherwise
    rl_lora: dict[str, Any] = field(default_factory=lambda: {
        "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    max_new_tokens: int = 32
    max_prompt_len: int = 480
    system_prompt: bool = True               # False: no system message (the tiny model learns the format from SFT)
    rationale: int = 0                       # > 0: demonstrations cite up to this many facts (| because: ...)
    dtype: str = "float32"


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
    """Every phrase a dialogue over ``kb`` can contain (questions, test names, findings, conditions)."""
    out = [DOCTOR_SYSTEM, TINY_TEMPLATE]
    for ev in kb.evidences.values():
        out += [ev.question, ev.say, ev.finding]
    for t in kb.tests.values():
        out += [t.name, t.normal]
    out += [c.name for c in kb.conditions]
    return [t for t in out if t]


# --------------------------------------------------------------------------- prompts
def messages(env) -> list[dict]:
    """The episode so far as chat messages (doctor = assistant)."""
    out = []
    for i, row in enumerate(env.transcript):
        if row["role"] == "doctor":
            out.append({"role": "assistant", "content": row["text"]})
        else:
            text = f"{env.intro} {row['text']}" if i == 0 else row["text"]
            out.append({"role": "user", "content": text})
    return out


def doctor_prompt(tok, env, system: str | None = DOCTOR_SYSTEM) -> str:
    from ..lm.generate import chat_prompt

    return chat_prompt(tok, messages(env), system)


class LMDoctor:
    """A causal LM acting as the doctor; ``act_batch(envs)`` generates one turn for each env.

    With ``record=True`` every generated batch is kept in ``chunks`` as
    ``(Rollout, [env.uid, ...])`` for multi-turn policy-gradient updates.
    """

    def __init__(self, model, tok, *, max_new_tokens: int = 32, temperature: float = 1.0,
                 do_sample: bool = False, max_prompt_len: int | None = 480, record: bool = False,
                 system: str | None = DOCTOR_SYSTEM):
        self.model, self.tok, self.system = model, tok, system
        self.max_new_tokens, self.temperature, self.do_sample = max_new_tokens, temperature, do_sample
        self.max_prompt_len, self.record = max_prompt_len, record
        self.chunks: list = []

    def act_batch(self, envs) -> list[str]:
        from ..lm.generate import generate

        prompts = [doctor_prompt(self.tok, e, self.system) for e in envs]
        roll = generate(self.model, self.tok, prompts, max_new_tokens=self.max_new_tokens,
                        temperature=self.temperature, do_sample=self.do_sample, max_prompt_len=self.max_prompt_len)
        if self.record:
            self.chunks.append((roll, [getattr(e, "uid", i) for i, e in enumerate(envs)]))
        return [t.strip() for t in roll.texts]

    def act(self, env) -> str:
        return self.act_batch([env])[0]


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
    weights = {f"layers.{i}.{n}": v for i, layer in enumerate(layers) for n, v in layer["state"].items()}
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


def system_of(cfg: ModelConfig) -> str | None:
    """The doctor's system prompt for ``cfg`` (None: no system message)."""
    if not cfg.system_prompt:
        return None
    return DOCTOR_SYSTEM + (RATIONALE_SYSTEM if cfg.rationale else "")


def make_doctor(model, tok, cfg: ModelConfig, **kw) -> LMDoctor:
    """An :class:`LMDoctor` with ``cfg``'s lengths and system prompt (greedy unless ``do_sample=True``)."""
    return LMDoctor(model, tok, max_new_tokens=cfg.max_new_tokens, max_prompt_len=cfg.max_prompt_len,
                    system=system_of(cfg), **kw)


def frozen_copy(model):
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m
