"""Dialogue fixtures: the packaged knowledge base, a few synthetic cases, one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def kb():
    from medkit.synth.knowledge import load_knowledge_base

    return load_knowledge_base()


@pytest.fixture(scope="session")
def cases(kb):
    from medkit.synth.cases import CasesConfig, generate_cases

    return generate_cases(CasesConfig(n_cases=60, seed=3), kb)
