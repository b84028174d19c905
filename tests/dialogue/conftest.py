"""Dialogue fixtures: the packaged knowledge base and a few synthetic cases."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def kb():
    from medkit.synth.knowledge import load_knowledge_base

    return load_knowledge_base()


@pytest.fixture(scope="session")
def cases(kb):
    from medkit.synth.cases import CasesConfig, generate_cases

    return generate_cases(CasesConfig(n_cases=60, seed=3), kb)
