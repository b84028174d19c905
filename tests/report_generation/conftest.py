"""One small synthetic set per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cxr_dir(tmp_path_factory):
    """16 synthetic studies, 64 px, PA only (R2Gen layout)."""
    from medkit.synth.cxr import CXRConfig, generate_dataset

    root = tmp_path_factory.mktemp("cxr")
    generate_dataset(CXRConfig(n_cases=16, seed=3, size=64, lateral=False, write_masks=False,
                               splits=(0.6, 0.2, 0.2)), root)
    return root


def tiny_overrides(root) -> list[str]:
    """A config small enough for seconds on one CPU thread."""
    return [f"data.root={root}", "data.generate_if_missing=false", "counterfactual.text_embedder=tfidf",
            "counterfactual.warmup_steps=4", "counterfactual.n_pictures=2", "decoder.lm=tiny-word",
            "decoder.tune=full", "decoder.tiny_hidden=32", "decoder.tiny_layers=1", "decoder.tiny_heads=2",
            "decoder.n_context=2", "optim.steps=6", "optim.eval_every=3", "optim.batch_size=4", "evaluation.meteor=approx",
            "generate.max_new_tokens=12", "encoder.init_features=8", "encoder.growth_rate=4"]
