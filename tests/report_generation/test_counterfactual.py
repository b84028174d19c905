"""Negatives and patch-swap counterfactuals: pure functions with a toy diagnosis model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medkit.report_generation.counterfactual import (
    cell_hits,
    diagnosis_shifted,
    gradient_relevance,
    occlusion_relevance,
    patch_mask,
    pick_negatives,
    save_counterfactual_png,
    swap_counterfactual,
    swap_precision,
)


def test_pick_negatives_most_similar_with_different_labels():
    sim = np.array([[1.0, 0.9, 0.5, 0.1],
                    [0.9, 1.0, 0.2, 0.8],
                    [0.5, 0.2, 1.0, 0.3],
                    [0.1, 0.8, 0.3, 1.0]])
    labels = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    # 0: 1 and 3 share its labels -> only 2 differs; 1: -> 2; 2: best of {0, 1, 3} = 0 (0.5); 3: -> 2
    assert pick_negatives(sim, labels).tolist() == [2, 2, 0, 2]
    assert pick_negatives(sim[:2, :2], labels[:2]).tolist() == [-1, -1]  # nothing differs
    # against a separate candidate set (the test-time bank): j == i is allowed there
    assert pick_negatives(np.array([[0.9, 0.1]]), np.array([[1, 0]]), np.array([[0, 1], [0, 1]])).tolist() == [0]


def _toy_predict(x: torch.Tensor) -> torch.Tensor:
    """Label 0 = mean of the top-left 16x16 block, label 1 = mean of the bottom-right block."""
    return torch.stack([x[:, 0, :16, :16].mean((1, 2)), x[:, 0, 16:, 16:].mean((1, 2))], 1)


def test_swap_stops_at_the_diagnosis_shift():
    anchor = torch.zeros(1, 32, 32)
    negative = torch.zeros(1, 32, 32)
    negative[:, :16, :16] = 1.0  # the negative differs in label 0 only
    rel = occlusion_relevance(_toy_predict, anchor, negative, patch=8)
    assert rel.shape == (4, 4)
    assert (rel[:2, :2] > 0).all() and (rel[2:, :] == 0).all()
    cf = swap_counterfactual(_toy_predict, anchor, negative, patch=8, max_fraction=1.0)
    # p0 after k of the 4 relevant patches = k/4; shifted when |k/4 - 1| < |k/4 - 0| -> k = 3
    assert cf.shifted and cf.n_swapped == 3
    assert cf.mask.sum() == 3 * 64 and cf.mask[:16, :16].sum() == 3 * 64
    assert torch.equal(cf.image, torch.where(cf.mask[None], negative, anchor))


def test_gradient_relevance_equals_occlusion_where_the_model_is_linear():
    """The toy model is linear in the pixels and the distance keeps its sign along every single swap,
    so the first-order relevance is exact: 0.25 for each top-left cell, 0 elsewhere (one backward pass
    for a batch of two pairs)."""
    anchor, negative = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    negative[:, :16, :16] = 1.0
    t = _toy_predict(negative[None])
    g = gradient_relevance(_toy_predict, torch.stack([anchor, anchor]), torch.stack([negative, negative]), 8,
                           t.repeat(2, 1))
    occ = occlusion_relevance(_toy_predict, anchor, negative, patch=8)
    assert g.shape == (2, 4, 4)
    assert torch.allclose(g[0], occ, atol=1e-6) and torch.allclose(g[1], occ, atol=1e-6)
    assert torch.allclose(g[0, :2, :2], torch.full((2, 2), 0.25))
    cf = swap_counterfactual(_toy_predict, anchor, negative, patch=8, relevance=g[0], max_fraction=1.0, batch=2)
    assert cf.shifted and cf.n_swapped == 3  # as with occlusion, scored two candidates at a time


def test_swap_cap_when_no_shift_is_reachable():
    anchor, negative = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    negative[:, :16, :16] = 1.0
    cf = swap_counterfactual(lambda x: torch.zeros(x.shape[0], 2), anchor, negative, patch=8, max_fraction=0.25)
    assert not cf.shifted and cf.n_swapped == 4
    with pytest.raises(ValueError, match="multiple of patch"):
        swap_counterfactual(_toy_predict, torch.zeros(1, 30, 30), torch.zeros(1, 30, 30), patch=8)


def test_shift_rule_and_mask():
    p = torch.tensor([[0.6, 0.0], [0.4, 0.0]])
    assert diagnosis_shifted(p, torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).tolist() == [True, False]
    m = patch_mask((2, 2), [3], 4)
    assert m.shape == (8, 8) and m[4:, 4:].all() and m.sum() == 16


def test_shift_is_tested_against_the_labels_not_the_models_own_guess():
    """A model that reads label 0 from the top-left block: with label targets the swap must move the
    prediction past the midpoint between the two label vectors, whatever the model said before."""
    anchor, negative = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    negative[:, :16, :16] = 1.0
    y_a, y_n = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0])
    cf = swap_counterfactual(_toy_predict, anchor, negative, patch=8, max_fraction=1.0, target_anchor=y_a,
                             target_negative=y_n)
    # p0 = k/4: nearer [1, 0] than [0, 0] once k/4 > 1/2 -> k = 3; the swapped cells are the relevant ones
    assert cf.shifted and cf.n_swapped == 3 and not cf.already_shifted
    assert set(cf.cells) <= {0, 1, 4, 5} and len(cf.cells) == 3
    # a model that misreads the anchor (0.9 on label 0 already): "shifted" before any swap, and said so
    misread = swap_counterfactual(lambda x: _toy_predict(x) * 0 + torch.tensor([0.9, 0.0]), anchor, negative,
                                  patch=8, target_anchor=y_a, target_negative=y_n)
    assert misread.already_shifted and misread.n_swapped == 1
    # against its own prediction (the old rule) a model that never changes can never shift; neither with labels
    flat = swap_counterfactual(lambda x: torch.full((x.shape[0], 2), 0.2), anchor, negative, patch=8,
                               max_fraction=0.5, target_anchor=y_a, target_negative=y_n)
    assert not flat.shifted and flat.n_swapped == 8


def test_swap_precision_against_random_cells():
    mask = np.zeros((32, 32), bool)
    mask[2:10, 3:5] = True  # touches cells (0, 0) and (1, 0) of the 4 x 4 grid of 8 px cells
    hits = cell_hits(mask, 8)
    assert hits.shape == (4, 4) and hits.sum() == 2 and hits[0, 0] and hits[1, 0]
    # 3 swapped cells, 2 on the finding: precision 2/3; random cells hit 2/16 of the time
    assert swap_precision([0, 4, 15], hits) == {"precision": 2 / 3, "random": 2 / 16, "n_cells": 3}
    assert swap_precision([], hits)["precision"] is None
    with pytest.raises(ValueError, match="multiple of patch"):
        cell_hits(np.zeros((30, 30), bool), 8)


def test_picture(tmp_path):
    a, n = torch.zeros(1, 16, 16), torch.ones(1, 16, 16)
    m = patch_mask((2, 2), [0], 8)
    p = save_counterfactual_png(tmp_path / "cf.png", a, torch.where(m[None], n, a), m, n, scale=2)
    img = np.asarray(Image.open(p))
    assert img.shape == (32, 4 * 32 + 3 * 2)
    assert img[:16, 32 + 2:32 + 2 + 16].min() == 255 and img[16:, 32 + 2:64 + 2].max() == 0


def test_retrieval_baseline_returns_the_nearest_report():
    from medkit.report_generation.baselines import pixel_features, retrieve

    train = torch.zeros(3, 1, 4, 4)
    train[0, 0, 0] = 1  # top row bright
    train[1, 0, :, 0] = 1  # left column bright
    train[2, 0, 3] = 1  # bottom row bright
    q = torch.zeros(1, 1, 4, 4)
    q[0, 0, :, 0] = 0.8
    assert retrieve(pixel_features(train), ["top", "left", "bottom"], pixel_features(q)) == ["left"]
