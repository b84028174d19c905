"""`medkit dialogue train|eval|chat` end to end on tmp folders; chat through a pseudo-terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medkit.cli import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
SMALL = ["data.pool=300", "data.n_train=6", "data.n_rl=3", "data.n_eval=3", "max_turns=3", "sft.steps=3",
         "sft.batch_size=4", "sft.eval_every=2", "srppo.steps=1", "srppo.cases_per_step=2", "grpo.steps=1",
         "grpo.cases_per_step=1", "grpo.group_size=2", "grpo_entropy_alpha=0.1", "model.hidden=32",
         "model.layers=1", "model.heads=2"]


@pytest.mark.slow
def test_train_then_eval_and_reload(tmp_path):
    import torch

    out = tmp_path / "run"
    args = ["dialogue", "train", str(ROOT / "pipelines" / "dialogue_tiny.yaml"), "--out", str(out)]
    for s in SMALL:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["results"]) == {"base", "sft", "srppo", "grpo", "grpo_entropy", "oracle"}
    for name, r in summary["results"].items():
        assert r["n"] == 3 and 0.0 <= r["top1"]["mean"] <= 1.0 and r["format_error_rate"] == 0.0, name
    assert summary["eval_split"] == "validate" and summary["sft_curve"][0]["step"] == 0
    assert (out / "demonstrations.jsonl").exists() and (out / "manifest.json").exists()
    recs = [json.loads(x) for x in (out / "predictions" / "grpo.jsonl").read_text().splitlines()]
    assert [r["case_id"] for r in recs] == summary["eval_case_ids"]["synth"]
    # a saved stage reloads to the same weights that were evaluated
    from medkit.dialogue.policy import load_policy

    m, tok, cfg, layers, _ = load_policy(out / "grpo")
    m2, *_ = load_policy(out / "grpo" / "policy.pt")  # a path to the old file name means its folder
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(m(x).logits, m2(x).logits)
        assert not torch.allclose(m(x).logits, load_policy(out / "base")[0](x).logits)
    assert len(layers) == 2 and layers[1]["lora"]["r"] == 16

    # --- resume: the run above stopped after 1 GRPO step; continue it to 2 without redoing SFT / SR-PPO
    def steps_logged(stage):
        rows = [json.loads(x) for x in (out / stage / "loop" / "logs" / "metrics.jsonl").read_text().splitlines()]
        return [r["step"] for r in rows if r.get("kind") != "eval"]

    kept = {st: (out / st / "model.safetensors").stat().st_mtime_ns for st in ("base", "sft", "srppo")}
    sft_rows, ppo_rows = steps_logged("sft"), steps_logged("srppo")
    assert steps_logged("grpo") == [1]
    res = runner.invoke(app, args + ["--set", "grpo.steps=2", "--resume"])
    assert res.exit_code == 0, res.output
    assert "sft: completed earlier (3 steps)" in res.output and "srppo: completed earlier (1 steps)" in res.output
    assert {st: (out / st / "model.safetensors").stat().st_mtime_ns for st in kept} == kept       # not rewritten
    assert steps_logged("sft") == sft_rows == [1, 2, 3] and steps_logged("srppo") == ppo_rows == [1]
    assert steps_logged("grpo") == [1, 2] and steps_logged("grpo_entropy") == [1, 2]
    assert "grpo step 2/2" in res.output and "grpo step 1/2" not in res.output
    for st in ("base", "sft", "srppo"):
        assert f"eval {st}: unchanged weights and cases, reusing eval/{st}.json" in res.output
    assert "eval grpo: unchanged" not in res.output
    assert json.loads((out / "grpo" / "stage.json").read_text())["steps"] == 2
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "completed" and len(man["resumed_at"]) == 1
    # anything but step counts is refused; a non-empty folder without --resume too
    res = runner.invoke(app, args + ["--set", "grpo.steps=2", "--set", "grpo.lr=0.1", "--resume"])
    assert res.exit_code == 2 and "grpo.lr" in res.output and "only step counts" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--resume" in res.output
    # the stage is a model folder `medkit dialogue eval` takes, with the training turn limit
    res = runner.invoke(app, ["dialogue", "eval", "--model", str(out / "sft"), "--cases", "2",
                              "--output", str(tmp_path / "ev"), "--error-discovery"])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert ev["n_cases"] == 2 and ev["max_turns"] == 3 and set(ev["error_discovery"]) >= {"persona", "generic"}
    assert ev["metrics"]["format_error_rate"] == 0.0


def test_eval_writes_a_run_folder(tmp_path):
    out = tmp_path / "o"
    res = runner.invoke(app, ["dialogue", "eval", "--cases", "5", "--output", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert {"top1", "top3", "n_cases", "mean_turns"} <= set(s) and s["n_cases"] == 5
    assert s["metrics"]["n"] == 5 and s["metrics"]["format_error_rate"] == 0.0 and s["data"] == "synthetic"
    assert len((out / "dialogues.jsonl").read_text().splitlines()) == 5
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "inference" and man["status"] == "completed" and man["device"] == "cpu"
    assert man["packages"] and man["medkit_version"] and "evaluate" in man["timings_s"]
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"] == "oracle" and cfg["n_cases"] == 5 and cfg["split"] == "test" and cfg["max_turns"] == 15
    rub = s["metrics"]["rubric"]                     # judge-scored rubric (rule judge by default)
    assert s["judge"] == "rule" and rub["judge"] == "rule"
    for item in ("history_taking", "safety"):
        m = rub[item]
        assert m["n"] + m["not_applicable"] == 5 and m["parse_failures"] == 0
    assert "top1 " in res.output and f"run folder: {out}" in res.output
    # an existing output is never overwritten silently
    res = runner.invoke(app, ["dialogue", "eval", "--cases", "5", "--output", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["dialogue", "eval", "--cases", "3", "--output", str(out), "--overwrite"])
    assert res.exit_code == 0 and json.loads((out / "summary.json").read_text())["n_cases"] == 3


def test_eval_on_genuine_ddxplus_rows(tmp_path, realformat):
    root = realformat / "ddxplus"
    out = tmp_path / "ddx"
    res = runner.invoke(app, ["dialogue", "eval", "--data", str(root), "--split", "test", "--cases", "8",
                              "--output", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads((out / "summary.json").read_text())
    assert s["n_cases"] == 8 and s["data"] == str(root) and s["split"] == "test" and s["metrics"]["diagnosed"] == 8
    man = json.loads((out / "manifest.json").read_text())
    assert {"release_evidences.json", "release_conditions.json", "release_train_patients.csv",
            "release_test_patients.csv"} <= set(man["inputs"])
    recs = [json.loads(x) for x in (out / "dialogues.jsonl").read_text().splitlines()]
    assert all(r["case_id"].startswith("ddxplus_test_") and None not in r["predicted"] for r in recs)


def test_evaluate_python_api(tmp_path, realformat):
    from medkit.dialogue.evaluate import evaluate

    s = evaluate("oracle", realformat / "ddxplus", "validate", n_cases=4, output=tmp_path / "api")
    assert s["n_cases"] == 4 and 0.0 <= s["top1"] <= s["top3"] <= 1.0 and s["mean_turns"] >= 1
    assert (tmp_path / "api" / "summary.json").exists()
    assert evaluate(n_cases=3)["n_cases"] == 3                      # synthetic, nothing written


@pytest.mark.parametrize("args, needle", [
    (["--judge", "vibes"], "--judge 'vibes'"),
    (["--split", "dev"], "--split 'dev'"),
    (["--cases", "0"], "--cases 0"),
    (["--model", "/nonexistent/doctor"], "no such model folder"),
    (["--data", "/nonexistent/ddx"], "not a folder"),
])
def test_eval_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    res = runner.invoke(app, ["dialogue", "eval", "--output", str(tmp_path / "x"), *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    assert not (tmp_path / "x" / "summary.json").exists()


def test_eval_bad_ddxplus_folder_and_read_only_output(tmp_path, realformat):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["dialogue", "eval", "--data", str(empty), "--output", str(tmp_path / "y")])
    assert res.exit_code == 2 and "release_evidences.json: file not found" in res.output
    assert len(res.output.strip().splitlines()) == 1
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        res = runner.invoke(app, ["dialogue", "eval", "--cases", "2", "--output", str(ro / "out")])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    finally:
        ro.chmod(0o700)


def test_train_user_errors(tmp_path, monkeypatch, realformat):
    monkeypatch.chdir(tmp_path)     # the default run folder would be runs/<name>-<time> here
    res = runner.invoke(app, ["dialogue", "train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "no such pipeline spec" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: dialogue-train\nconfig: {grpo: {stepz: 3}}\n")
    res = runner.invoke(app, ["dialogue", "train", str(bad)])
    assert res.exit_code == 2 and "stepz" in res.output
    res = runner.invoke(app, ["dialogue", "train", "dialogue_tiny", "--split", "dev"])
    assert res.exit_code == 2 and "--split 'dev'" in res.output
    res = runner.invoke(app, ["dialogue", "train", "dialogue_tiny", "--data", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a folder" in res.output
    res = runner.invoke(app, ["dialogue", "train", "dialogue_tiny", "--data", str(realformat / "ddxplus"),
                              "--set", "data.eval_split=train"])
    assert res.exit_code == 2 and "held-out cases must not be training cases" in res.output
    assert not (tmp_path / "runs").exists(), "a refused config must not leave a run folder behind"
    res = runner.invoke(app, ["dialogue", "chat", "--role", "nurse"])
    assert res.exit_code == 2 and "must be doctor or patient" in res.output


def test_help_examples_run(tmp_path, monkeypatch, realformat):
    """The examples `--help` shows are commands that work (the eval one verbatim)."""
    import shlex

    from medkit.dialogue.cli import EVAL_EXAMPLE, TRAIN_EXAMPLE

    res = runner.invoke(app, ["dialogue", "eval", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "--data" in res.output
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, shlex.split(EVAL_EXAMPLE)[1:])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "runs" / "eval-oracle" / "summary.json").read_text())["n_cases"] == 20
    res = runner.invoke(app, ["dialogue", "train", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output
    # the train example, with the data and model shrunk so it takes seconds
    res = runner.invoke(app, shlex.split(TRAIN_EXAMPLE)[1:] + [x for s in SMALL for x in ("--set", s)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "runs" / "doctor-tiny" / "sft" / "stage.json").read_text())["status"] == "completed"
    # --data / --split reach the config: a DDXPlus run of the same spec
    res = runner.invoke(app, ["dialogue", "train", "dialogue_tiny", "--data", str(realformat / "ddxplus"), "--split",
                              "train", "--out", str(tmp_path / "ddx"), *[x for s in SMALL for x in ("--set", s)],
                              "--set", "srppo.enabled=false", "--set", "grpo.enabled=false"])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "ddx" / "summary.json").read_text())
    assert s["sources"] == ["ddxplus"] and s["config"]["data"]["root"] == str(realformat / "ddxplus")
    # a spec of both sources keeps both when --data is given (the DDXPlus folder fills data.root)
    from medkit.dialogue.cli import data_overrides

    root = realformat / "ddxplus"
    assert data_overrides("dialogue_smollm2_cpu", root, None) == ["data.source=both", f"data.root={root}"]
    assert data_overrides("dialogue_tiny", root, "validate") == ["data.source=ddxplus", f"data.root={root}",
                                                                 "data.train_split=validate"]

    assert all(c.startswith("ddxplus_validate_") for c in s["eval_case_ids"]["ddxplus"])


def test_chat_person_plays_doctor_with_clirunner():
    from medkit.dialogue.data import load_split
    from medkit.dialogue.train_config import DataConfig

    _, held = load_split(DataConfig(pool=220), "test", 1)
    truth = held[0]["diagnosis"]["name"]
    script = "hello there\nASK: Do you have a cough?\nEXAM: Vital signs\nDIAGNOSIS: " + truth + " | confidence: 0.5\n"
    res = runner.invoke(app, ["dialogue", "chat", "--role", "doctor"], input=script)
    assert res.exit_code == 0, res.output
    assert "[format]" in res.output and "Vital signs:" in res.output
    assert "correct: True" in res.output and "format errors: 1" in res.output


def test_chat_person_plays_patient_with_clirunner():
    res = runner.invoke(app, ["dialogue", "chat", "--role", "patient", "--max-turns", "4"],
                        input="I have a headache\nno\nyes\nnot sure\nno\n")
    assert res.exit_code == 0, res.output
    assert res.output.count("doctor: ") >= 1 and "true diagnosis:" in res.output


@pytest.mark.skipif(sys.platform == "win32", reason="pty is POSIX only")
def test_chat_through_a_pseudo_terminal():
    """A script types into a real terminal (pty), as a person would."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI, stdin/stdout on the pty
        os.environ["MEDKIT_NO_PROGRESS"] = "1"
        os.execv(sys.executable, [sys.executable, "-c", "from medkit.cli import app; app()",
                                  "dialogue", "chat", "--role", "doctor", "--max-turns", "3"])
    out = b""

    def read_until(marker: bytes, timeout: float = 60.0):
        nonlocal out
        end = time.time() + timeout
        while marker not in out and time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return marker in out

    try:
        assert read_until(b"doctor:"), out.decode(errors="replace")
        for line in (b"ASK: Do you have a fever?\n", b"not an action\n", b"DIAGNOSIS: Influenza\n"):
            os.write(fd, line)
            time.sleep(0.3)
        assert read_until(b"true diagnosis:"), out.decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text
    assert "[format]" in text and "format errors: 1" in text
