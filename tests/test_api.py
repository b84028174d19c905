"""The public Python API (README "Python API"): ``medkit.segment``, ``medkit.report``,
``medkit.deform``, run as one-liners from a fresh script in a folder outside the checkout
(the shipped models are found as package data, not by a path relative to the working folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, sys
    import medkit

    heavy_at_import = [m for m in ("torch", "monai", "transformers") if m in sys.modules]

    seg = medkit.segment("ct.nii.gz", device="cpu", fast=True)                 # in memory, shipped model
    out = medkit.segment("ct.nii.gz", "seg", device="cpu", fast=True)          # written to seg/
    rep = medkit.report("chest.png", device="cpu", max_new_tokens=12)          # shipped CoFE model
    d = None
    if "--deform" in sys.argv:
        d = medkit.deform("seq.nii.gz", device="cpu", predict_at=[0.25], overrides=["iters=4", "ref_iters=4",
                          "points_per_phase=64", "reg_points=16", "width=8", "depth=1", "fourier_features=4",
                          "ref_points=64"])

    labels = seg.labels
    print(json.dumps({
        "heavy_at_import": heavy_at_import,
        "labels_type": type(labels).__name__, "labels_dtype": str(labels.dtype), "labels_shape": list(labels.shape),
        "labels_affine": labels.affine.tolist(), "labels_max": int(labels.max()),
        "volumes": seg.volumes_ml, "case_id": seg.case_id, "paths_in_memory": {k: str(v) for k, v in seg.paths.items()},
        "written": {k: str(v) for k, v in out.paths.items()}, "written_labels_equal": bool((out.labels == labels).all()),
        "report": rep.rows[0], "deform_times": sorted(d.arrays) if d else None,
        "ddf_shape": list(d.arrays[0.25]["ddf"].shape) if d else None,
        "medkit_file": medkit.__file__,
    }))
''')


def _run(tmp_path: Path, *args: str) -> dict:
    import nibabel as nib
    from PIL import Image

    from medkit.synth.liver_ct import LiverCTConfig, render_case

    case = render_case(LiverCTConfig(seed=0, shape=(48, 48, 24), spacing_xy_mm=(7.0, 7.5), spacing_z_mm=(9.0, 10.0),
                                     fine_xy=1, fine_z_max_mm=5.0, max_tumours=0), 0)
    nib.save(nib.Nifti1Image(case.image.astype(np.int16), case.affine), str(tmp_path / "ct.nii.gz"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "chest.png")
    rng = np.random.default_rng(1)
    seq = nib.Nifti1Image((rng.normal(0, 30, (10, 8, 6, 3)) - 400).astype(np.float32), np.diag([4.0, 4.0, 4.0, 1]))
    seq.header.set_zooms((4.0, 4.0, 4.0, 0.5))
    nib.save(seq, str(tmp_path / "seq.nii.gz"))
    (tmp_path / "script.py").write_text(SCRIPT)
    assert not str(tmp_path).startswith(str(REPO))
    env = {**os.environ, "MEDKIT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "script.py", *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["heavy_at_import"] == []  # `import medkit` stays light; components load on first call
    assert got["labels_type"] == "MetaTensor" and got["labels_dtype"] == "torch.uint8"
    assert got["labels_shape"] == [1, *case.image.shape] and 1 <= got["labels_max"] <= 8
    np.testing.assert_allclose(np.asarray(got["labels_affine"]), case.affine, atol=1e-4)  # the input's geometry
    assert set(got["volumes"]) == {"I", "II", "III", "IV", "V", "VI", "VII", "VIII"} and sum(got["volumes"].values()) > 0
    assert got["case_id"] == "ct" and got["paths_in_memory"] == {}
    assert got["written"]["labels"] == "seg/ct.nii.gz" and got["written_labels_equal"]
    assert (tmp_path / "seg" / "cases.csv").exists() and (tmp_path / "seg" / "statistics.csv").exists()
    assert got["report"]["case_id"] == "chest" and got["report"]["report"]
    return got


def test_segment_and_report_from_a_fresh_script_outside_the_checkout(tmp_path):
    """~12 s, most of it the subprocess importing torch and MONAI: the one check of the README's
    Python calls exactly as a user runs them."""
    _run(tmp_path)


@pytest.mark.slow
def test_deform_from_a_fresh_script_too(tmp_path):
    got = _run(tmp_path, "--deform")
    assert got["deform_times"] == [0.25] and got["ddf_shape"] == [3, 10, 8, 6]


def test_lazy_api_names_resolve_to_the_cli_functions():
    import medkit
    from medkit.deformation.pipeline import deform
    from medkit.report_generation.predict import report
    from medkit.segmentation.segment import segment

    assert sorted(medkit.__all__) == sorted(["__version__", *medkit._LAZY])
    assert (medkit.segment, medkit.report, medkit.deform) == (segment, report, deform)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        medkit.nope  # noqa: B018
