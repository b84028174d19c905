"""Every example in every command's ``--help`` (``medkit.cli.EXAMPLES``) is shown and runs.

The examples use relative paths; each one runs in a fresh copy of a sandbox holding what they
name: ``ct.nii.gz``, ``scans/patient07`` and ``scans/patient08`` (DICOM CT), ``chest.png``,
``refs.jsonl``, ``cxr/`` (``medkit synth cxr``) and, for the slow ones, ``4dct/``. Examples
that train, fit or generate volumes for minutes are marked slow; the rest run by default.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medkit.cli import EXAMPLES, app

SERIES_UID = "1.2.826.0.1.3680043.8.498.7001"  # the UID the inspect example names
SLOW = {"synth liver-ct", "synth 4dct", "synth longitudinal", "deform", "train segmentation", "train report",
        "model export", "demo"}
SLOW_LINES = {"medkit run couinaud_synthetic --out runs/couinaud --set optim.steps=50"}
ALL = [(name, line) for name, lines in EXAMPLES.items() for line in lines]


def _phantom(index: int):
    from medkit.synth.liver_ct import LiverCTConfig, render_case

    return render_case(LiverCTConfig(seed=0, shape=(48, 48, 24), spacing_xy_mm=(7.0, 7.5), spacing_z_mm=(9.0, 10.0),
                                     fine_xy=1, fine_z_max_mm=5.0, max_tumours=0), index)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Path:
    import nibabel as nib
    from PIL import Image

    from medkit.io.dicom_write import write_dicom_series
    from medkit.synth.cxr import CXRConfig, generate_dataset

    root = tmp_path_factory.mktemp("sandbox")
    c = _phantom(0)
    nib.save(nib.Nifti1Image(c.image.astype(np.int16), c.affine), str(root / "ct.nii.gz"))
    write_dicom_series(c.image.astype(np.float64), root / "scans" / "patient07", affine=c.affine, uid_seed=7,
                       series_uid=SERIES_UID, series_number=3)
    c1 = _phantom(1)
    write_dicom_series(c1.image.astype(np.float64), root / "scans" / "patient08", affine=c1.affine, uid_seed=8)
    generate_dataset(CXRConfig(n_cases=2, seed=0, size=64, lateral=False, write_masks=False), root / "cxr")
    first = sorted((root / "cxr" / "images").rglob("*.png"))[0]
    Image.open(first).save(root / "chest.png")
    (root / "refs.jsonl").write_text(json.dumps({"case_id": "chest", "report": "The heart size is normal. "
                                                 "No pleural effusion. No pneumothorax."}) + "\n")
    return root


def _slow_sandbox(root: Path) -> None:
    from medkit.synth.motion import Motion4DConfig, generate_4dct_dataset

    if not (root / "4dct").exists():
        generate_4dct_dataset(Motion4DConfig(n_cases=1, seed=0, shape=(40, 32, 32), spacing_mm=(8.0, 8.0, 8.0),
                                             n_phases=4, forward_fields=False, n_landmarks=20), root / "4dct")


def test_every_command_shows_its_examples():
    """Each command's --help ends with its examples (in full, one per line)."""
    for name, lines in EXAMPLES.items():
        r = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "250"})
        assert r.exit_code == 0, r.output
        assert "Examples:" in r.output, name
        for line in lines:
            assert line in r.output, (name, line)


def test_every_command_has_examples():
    """No command without examples: walk the click tree (dialogue's commands belong to its own CLI)."""
    import typer.main

    group = typer.main.get_command(app)

    def walk(cmd, prefix=()):
        for name, sub in getattr(cmd, "commands", {}).items():
            if name == "dialogue":
                continue
            if getattr(sub, "commands", None):
                yield from walk(sub, (*prefix, name))
            else:
                yield " ".join((*prefix, name))

    assert sorted(walk(group)) == sorted(EXAMPLES)


def _run_example(sandbox: Path, tmp_path: Path, monkeypatch, line: str):
    work = tmp_path / "work"
    shutil.copytree(sandbox, work)
    monkeypatch.chdir(work)
    argv = shlex.split(line)
    assert argv[0] == "medkit"
    r = CliRunner().invoke(app, argv[1:], env={"MEDKIT_NO_PROGRESS": "1", "COLUMNS": "200", "CUDA_VISIBLE_DEVICES": ""})
    assert r.exit_code == 0, f"{line}\n{r.output}\n{r.stderr if r.stderr_bytes else ''}"
    return work, r


@pytest.mark.parametrize("name,line", [(n, x) for n, x in ALL if n not in SLOW and x not in SLOW_LINES],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("medkit") else "")
def test_example_runs(name, line, sandbox, tmp_path, monkeypatch):
    work, r = _run_example(sandbox, tmp_path, monkeypatch, line)
    if name == "segment":
        assert (work / "seg" / "cases.csv").exists() and (work / "seg" / "statistics.csv").exists()
    if line.endswith("--references refs.jsonl"):
        assert json.loads((work / "reports" / "metrics.json").read_text())["n"] == 1
    if name == "inspect" and "--series-uid" in line:
        assert SERIES_UID in r.output


@pytest.mark.slow
@pytest.mark.parametrize("name,line", [(n, x) for n, x in ALL if n in SLOW or x in SLOW_LINES],
                         ids=lambda v: v if isinstance(v, str) and v.startswith("medkit") else "")
def test_slow_example_runs(name, line, sandbox, tmp_path, monkeypatch):
    """The training, fitting and volume-generating examples, for real (minutes each on CPU)."""
    _slow_sandbox(sandbox)
    if name == "model export":  # it exports a training run: make the one the train example makes
        _run_example(sandbox, tmp_path / "pre", monkeypatch, EXAMPLES["train segmentation"][0])
        shutil.copytree(tmp_path / "pre" / "work" / "runs", sandbox / "runs", dirs_exist_ok=True)
    _run_example(sandbox, tmp_path, monkeypatch, line)


@pytest.mark.parametrize("line", [x for _, x in ALL])
def test_every_example_parses(line):
    """The slow examples too: every option exists and every value has its type (click parses the line,
    nothing runs), so a renamed flag breaks the default suite, not only the slow one."""
    import typer.main

    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("medkit", shlex.split(line)[1:])
    path = []
    while hasattr(cmd, "resolve_command"):  # a group: descend to the subcommand
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        path.append(name)
        ctx = cmd.make_context(name, rest, parent=ctx)
    assert " ".join(path) in EXAMPLES and not ctx.args  # reached the command; nothing left unparsed
