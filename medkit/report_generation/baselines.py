"""Nearest-neighbour report retrieval: return the report of the most similar training image.

The classic floor for report generation (used as a baseline since Jing et al.
2018): no decoder, so its reports are always fluent and in the training style;
it is only as right as the image similarity. Two feature spaces: raw pixels
(cosine of the flattened images) and a trained encoder's pooled features.
"""

from __future__ import annotations

import numpy as np
import torch

from .counterfactual import cosine_similarity


def retrieve(train_features: np.ndarray, train_reports: list[str], query_features: np.ndarray) -> list[str]:
    """For each query row, the report of the training row of highest cosine similarity."""
    sim = cosine_similarity(query_features, train_features)
    return [train_reports[j] for j in sim.argmax(1)]


def pixel_features(images: torch.Tensor) -> np.ndarray:
    """``(N, H*W)`` zero-mean flattened pixels (cosine on them = Pearson correlation)."""
    x = images.flatten(1).double()
    return (x - x.mean(1, keepdim=True)).cpu().numpy()


@torch.no_grad()
def encoder_features(encoder, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """``(N, C)`` pooled features of an :class:`~.encoder.ImageEncoder` in eval mode."""
    was = encoder.training
    encoder.eval()
    out = [encoder(images[s:s + batch])["pooled"].cpu().numpy() for s in range(0, len(images), batch)]
    encoder.train(was)
    return np.concatenate(out)
