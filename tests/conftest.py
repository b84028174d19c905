"""Shared fixtures: one torch thread, small synthetic DICOM series written into tmp_path."""

from __future__ import annotations

import zlib

import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One torch thread for the whole suite: on a small CPU box shared with other jobs,
    torch's default of one thread per core thrashes (a tiny-LM step measured 60x slower
    with 2 threads), and results do not depend on the machine's core count."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _rotated_affine(spacing=(0.7, 0.9, 2.5), angle_deg=20.0, origin=(12.0, -40.0, 65.0)) -> np.ndarray:
    """A RAS voxel->mm affine with anisotropic spacing, rotated about the S axis."""
    a = np.radians(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(spacing)[None, :]
    aff[:3, 3] = origin
    return aff


def _ct_array(shape=(12, 10, 6), seed: int = 0) -> np.ndarray:
    """Whole-HU values from air (-1000) to bone (+1200), so int16 storage is exact."""
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1200, size=shape).astype(np.float64)


@pytest.fixture
def make_series(tmp_path):
    """Factory: ``make_series(name, arr=None, affine=None, **kw) -> (folder, arr, affine)``."""
    from medkit.io.dicom_write import write_dicom_series

    def make(name="series", arr=None, affine=None, **kw):
        arr = _ct_array() if arr is None else arr
        affine = _rotated_affine() if affine is None else affine
        folder = tmp_path / name
        write_dicom_series(arr, folder, affine=affine, uid_seed=kw.pop("uid_seed", zlib.crc32(name.encode())), **kw)
        return folder, arr, affine

    return make


@pytest.fixture
def rotated_affine():
    """The affine factory ``rotated_affine(spacing, angle_deg, origin)``."""
    return _rotated_affine


@pytest.fixture
def ct_array():
    """The HU array factory ``ct_array(shape, seed)``."""
    return _ct_array


@pytest.fixture(scope="session")
def realformat():
    """``../shared/realformat``: genuine published files (DDXPlus, MSD dataset.json, DIR-Lab
    formats, 4D-Lung DICOM; see its SOURCES.md). CI has the folder beside the checkout;
    a clone without it skips these tests with the reason."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1].parent / "shared" / "realformat"
    if not root.is_dir():
        pytest.skip(f"{root} not found: the genuine-format files sit beside the checkout in CI")
    return root


@pytest.fixture
def accelerate_launch():
    """``accelerate_launch(*args)``: the command that runs ``args`` in 2 processes under
    ``accelerate launch`` on this machine (the distributed tests). ``--multi_gpu`` picks
    accelerate's torchrun launcher (one process per rank); without CUDA, medkit's
    ``Accelerator(cpu=True)`` then joins the ranks over gloo (``--cpu`` would start a single
    process: accelerate's CPU launcher expects MPI for more). A free port per call."""
    import shutil
    import socket
    import sys
    from pathlib import Path

    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    assert accelerate, "accelerate's launcher is part of the llm extra"

    def command(*args: str) -> list[str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), *args]

    return command
