"""CoFE losses, worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medkit.report_generation.losses import counterfactual_info_nce, diagnosis_loss, report_nll


def test_info_nce_single_pair_is_cofe_formula():
    # t = v = e1, v_cf = e2, tau = 1: logits [cos(t,v), cos(t,v_cf)] = [1, 0]
    # loss = -log(e^1 / (e^1 + e^0)) = log(1 + e^-1)
    t, v, vcf = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    assert float(counterfactual_info_nce(t, v, vcf, 1.0)) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    # a counterfactual identical to the factual image cannot be told apart: log 2
    assert float(counterfactual_info_nce(t, v, v, 1.0)) == pytest.approx(math.log(2), rel=1e-6)


def test_info_nce_batch_uses_other_images_as_negatives():
    # B = 2, orthogonal pairs, no cf: logits rows [1, 0] / tau -> loss = log(1 + e^{-1/tau})
    t = torch.eye(2)
    assert float(counterfactual_info_nce(t, t, None, 0.5)) == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    with_cf = counterfactual_info_nce(t, t, torch.flip(t, [1]), 0.5)
    assert float(with_cf) == pytest.approx(math.log(1 + 2 * math.exp(-2)), rel=1e-6)


def test_diagnosis_and_nll():
    assert float(diagnosis_loss(torch.zeros(1, 14), torch.ones(1, 14))) == pytest.approx(math.log(2))
    logits = torch.zeros(1, 3, 4)  # uniform over 4 tokens -> NLL log 4 on every counted position
    tgt = torch.tensor([[-100, 2, -100]])  # only position 1 counts (predicted from position 0)
    assert float(report_nll(logits, tgt)) == pytest.approx(math.log(4))
