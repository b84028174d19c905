"""One torch thread for these tests: on a small CPU box shared with other jobs, torch's
default of one thread per core thrashes (a tiny-LM step measured 60x slower with 2 threads)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
