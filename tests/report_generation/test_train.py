"""`medkit train report` and `medkit report` end to end on a 16-study synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medkit.cli import app
from medkit.config import ConfigError
from medkit.io.errors import MedkitInputError, ReportDatasetError
from medkit.pipelines import run_spec
from medkit.report_generation.predict import report

from .conftest import tiny_overrides

PIPE = Path(__file__).resolve().parents[2] / "pipelines" / "report_synthetic.yaml"
ENV = {"MEDKIT_NO_PROGRESS": "1"}


@pytest.fixture(scope="module")
def run_dir(cxr_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    return run_spec(PIPE, expect="train-report", out=out, overrides=tiny_overrides(cxr_dir), device="cpu")


def test_run_folder(run_dir, cxr_dir):
    for f in ("config.yaml", "manifest.json", "summary.json", "checkpoints/best.pt", "checkpoints/last.pt",
              "logs/metrics.jsonl", "predictions/reports.jsonl", "counterfactuals/counterfactuals.jsonl"):
        assert (run_dir / f).is_file(), f
    assert len(list((run_dir / "counterfactuals").glob("*.png"))) == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 10 and summary["counterfactuals"]["n"] > 0
    assert 0 <= summary["test"]["BLEU_4"] <= 1 and "example_f1" in summary["test"]
    ann = json.loads((cxr_dir / "annotation.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "predictions" / "reports.jsonl").read_text().splitlines()]
    assert [r["case_id"] for r in rows] == [e["id"] for e in ann["test"]]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "completed"


def test_resume_continues_the_count(run_dir, cxr_dir):
    first = json.loads((run_dir / "summary.json").read_text())["train_seconds"]
    out = run_spec(PIPE, expect="train-report", out=run_dir, overrides=["optim.steps=9"], resume=True, device="cpu")
    hist = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [7, 10, 13]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 13
    assert summary["train_seconds"] > first  # the time of every chunk, not only the last one


def test_report_cli_on_annotation_and_folder(run_dir, cxr_dir, tmp_path):
    path = report(cxr_dir / "annotation.json", tmp_path / "a", model=run_dir, device="cpu",
                  beams=2, max_new_tokens=8).paths["reports"]
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(rows) == 16 and {"case_id", "report", "reference"} <= set(rows[0])
    r = CliRunner().invoke(app, ["report", "-i", str(cxr_dir / "images" / "CXR0001"), "-o", str(tmp_path / "b"),
                                 "--model", str(run_dir), "--device", "cpu", "--max-new-tokens", "6"], env=ENV)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "b" / "reports.jsonl").read_text().splitlines()]
    assert [x["case_id"] for x in rows] == ["0"]


def test_clear_errors(cxr_dir, tmp_path, monkeypatch):
    import medkit.report_generation.predict as P

    monkeypatch.setattr(P, "DEFAULT_MODEL", None)
    with pytest.raises(ConfigError, match="--model"):
        report(cxr_dir, tmp_path, model=None)
    monkeypatch.undo()
    with pytest.raises(MedkitInputError, match="not a model folder"):
        report(cxr_dir, tmp_path, model=tmp_path)
    with pytest.raises(ConfigError, match="unknown key"):
        run_spec(PIPE, expect="train-report", out=tmp_path / "x", overrides=["optim.stepz=3"])
    with pytest.raises(ReportDatasetError, match="annotation"):
        run_spec(PIPE, expect="train-report", out=tmp_path / "y", overrides=[f"data.root={tmp_path / 'none'}",
                                                                  "data.generate_if_missing=false"], device="cpu")
    r = CliRunner().invoke(app, ["report", "-i", str(tmp_path / "nope"), "-o", str(tmp_path / "o")], env=ENV)
    assert r.exit_code == 2 and "nope" in r.output and "no such file" in r.output


@pytest.mark.parametrize("name", ["report_synthetic", "report_iu_xray", "report_mimic_cxr"])
def test_pipelines_parse(name):
    from medkit.config import load_pipeline
    from medkit.report_generation.cofe_config import ReportConfig

    cfg = load_pipeline(PIPE.parent / f"{name}.yaml", "train-report", ReportConfig)
    assert cfg.name == name.replace("_", "-")
    assert cfg.data.dataset == {"report_synthetic": "synthetic", "report_iu_xray": "iu_xray",
                                "report_mimic_cxr": "mimic_cxr"}[name]


def test_train_report_command(cxr_dir, tmp_path):
    args = ["train", "report", str(PIPE), "--out", str(tmp_path / "run"), "--device", "cpu"]
    for ov in tiny_overrides(cxr_dir) + ["optim.steps=2", "optim.eval_every=2", "counterfactual.warmup_steps=1"]:
        args += ["--set", ov]
    r = CliRunner().invoke(app, args, env=ENV)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file() and "run folder" in r.output
    r = CliRunner().invoke(app, args, env=ENV)  # the folder is taken now: refused, exit 2
    assert r.exit_code == 2 and "not empty" in r.output


def test_counterfactuals_refresh_and_val_ce_curve(cxr_dir):
    """refresh_every rebuilds the counterfactuals against the encoder as it trains; val_ce_every logs
    the validation CE micro-F1 of generated reports (the curve the benchmark budgets come from)."""
    from medkit.config import load_config
    from medkit.report_generation.cofe_config import ReportConfig
    from medkit.report_generation.data import load_studies
    from medkit.report_generation.train import ReportData, fit

    cfg = load_config({}, ReportConfig, [*tiny_overrides(cxr_dir), "counterfactual.refresh_every=2",
                                         "evaluation.val_ce_every=3", "evaluation.val_ce_max=2"])
    st = load_studies(cfg.data)
    res = fit(cfg, ReportData(st["train"], st["val"]), run=None, device="cpu", progress=lambda it, *a, **k: it)
    W = cfg.counterfactual.warmup_steps
    assert [b["step"] for b in res["cf_builds"]] == [W, W + 2, W + 4]
    for b in res["cf_builds"]:
        assert len(b["rows"]) == len(st["train"]) and 0 <= b["shifted"] <= b["n"]
        assert all(len(r["cells"]) >= 1 for r in b["rows"] if r["negative"] >= 0)
    ce = [h for h in res["history"] if "val_ce_f1" in h]
    assert [h["step"] for h in ce] == [W + 3, W + 6] and all(0 <= h["val_ce_f1"] <= 1 for h in ce)


def test_select_by_val_ce_f1_names_the_best_generation(cxr_dir, tmp_path):
    """``evaluation.select=val_ce_f1``: best.pt is the evaluation with the highest val CE micro-F1
    of generated reports (ties: the earlier step), not the lowest val NLL."""
    from medkit.runs import load_checkpoint

    out = run_spec(PIPE, expect="train-report", out=tmp_path / "sel", device="cpu",
                   overrides=tiny_overrides(cxr_dir) + ["evaluation.val_ce_every=3", "evaluation.val_ce_max=3",
                                                        "evaluation.select=val_ce_f1"])
    hist = [json.loads(x) for x in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    ce = [(-h["val_ce_f1"], h["step"]) for h in hist if "val_ce_f1" in h]
    assert len(ce) >= 2
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    assert best["step"] == min(ce)[1] and best["best_rule"] == "val_ce_f1"


def test_reselect_on_resume_uses_only_kept_checkpoints(tmp_path):
    """Changing ``evaluation.select`` on a resumed run re-ranks its logged evaluations: the
    winner's checkpoint becomes best.pt when it was kept, and a winner that was not kept is a
    clear error rather than another step called best."""
    import torch

    from medkit.config import load_config
    from medkit.report_generation.cofe_config import ReportConfig
    from medkit.report_generation.train import _reselect
    from medkit.runs import RunDir

    cfg = load_config(None, ReportConfig, ["evaluation.val_ce_every=1", "evaluation.select=val_ce_f1"])
    hist = [{"step": 2, "val_nll": 0.5, "val_ce_f1": 0.4}, {"step": 4, "val_nll": 0.3, "val_ce_f1": 0.5},
            {"step": 6, "val_nll": 0.4, "val_ce_f1": 0.6}]
    run = RunDir.create(tmp_path / "a", config=cfg)
    last = {"model": {"w": torch.ones(1) * 6}, "step": 6, "history": hist, "best": 0.3}
    run.save_checkpoint({**last, "step": 4, "model": {"w": torch.ones(1) * 4}}, "best")  # by val NLL
    assert _reselect(run, cfg, last, log=lambda m: None) == -0.6
    got = run.load_checkpoint("best")
    assert got["step"] == 6 and float(got["model"]["w"]) == 6 and got["best_rule"] == "val_ce_f1"

    run_b = RunDir.create(tmp_path / "b", config=cfg)
    hist_b = [dict(h, val_ce_f1=0.9) if h["step"] == 2 else h for h in hist]  # the winner, step 2, was not kept
    run_b.save_checkpoint({**last, "step": 4, "history": hist_b}, "best")
    with pytest.raises(ConfigError, match="picks step 2, whose checkpoint was not kept"):
        _reselect(run_b, cfg, {**last, "history": hist_b}, log=lambda m: None)
    assert run_b.load_checkpoint("best")["step"] == 4  # untouched
