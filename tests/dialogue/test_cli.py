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
         "sft.batch_size=4", "srppo.steps=1", "srppo.batch_size=4", "srppo.mini_batch_size=4", "grpo.steps=1",
         "grpo.cases_per_step=1", "grpo.group_size=2", "grpo_entropy_alpha=0.1", "model.hidden=32",
         "model.layers=1", "model.heads=2", "model.max_new_tokens=8"]


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
        assert r["n"] == 3 and 0.0 <= r["top1"]["mean"] <= 1.0, name
    assert (out / "demonstrations.jsonl").exists() and (out / "manifest.json").exists()
    recs = [json.loads(x) for x in (out / "predictions" / "grpo.jsonl").read_text().splitlines()]
    assert [r["case_id"] for r in recs] == summary["eval_case_ids"]
    # a saved stage reloads to the same weights that were evaluated: same greedy actions again
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
        return [json.loads(x)["step"] for x in (out / stage / "loop" / "logs" / "metrics.jsonl").read_text().splitlines()]

    kept = {st: (out / st / "model.safetensors").stat().st_mtime_ns for st in ("base", "sft", "srppo")}
    sft_rows, ppo_rows = steps_logged("sft"), steps_logged("srppo")
    assert steps_logged("grpo") == [1]
    res = runner.invoke(app, args + ["--set", "grpo.steps=2", "--resume"])
    assert res.exit_code == 0, res.output
    assert "sft: completed earlier (3 steps)" in res.output and "srppo: completed earlier (1 steps)" in res.output
    assert {st: (out / st / "model.safetensors").stat().st_mtime_ns for st in kept} == kept       # not rewritten
    assert steps_logged("sft") == sft_rows == [1, 2, 3] and steps_logged("srppo") == ppo_rows == [1]
    # the GRPO step counter continues (1 -> 2), it does not restart at 1
    assert steps_logged("grpo") == [1, 2] and steps_logged("grpo_entropy") == [1, 2]
    assert "grpo step 2/2" in res.output and "grpo step 1/2" not in res.output
    # unchanged stages are not re-evaluated (same weights, same cases); changed ones are
    for st in ("base", "sft", "srppo"):
        assert f"eval {st}: unchanged weights and cases, reusing eval/{st}.json" in res.output
    assert "eval grpo: unchanged" not in res.output
    assert json.loads((out / "grpo" / "stage.json").read_text())["steps"] == 2
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "completed" and len(man["resumed_at"]) == 1
    assert json.loads((out / "summary.json").read_text())["config"]["grpo"]["steps"] == 2
    # anything but step counts is refused; a non-empty folder without --resume too
    res = runner.invoke(app, args + ["--set", "grpo.steps=2", "--set", "grpo.lr=0.1", "--resume"])
    assert res.exit_code == 2 and "grpo.lr" in res.output and "only step counts" in res.output
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "--resume" in res.output
    res = runner.invoke(app, ["dialogue", "eval", "--model", str(out / "sft"), "--cases", "2", "--max-turns", "3",
                              "--output", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert ev["n_cases"] == 2 and set(ev["error_discovery"]) >= {"persona", "generic"}


def test_eval_oracle_and_user_errors(tmp_path):
    res = runner.invoke(app, ["dialogue", "eval", "--cases", "5", "--output", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert s["metrics"]["n"] == 5 and s["metrics"]["format_error_rate"] == 0.0
    assert len((tmp_path / "o" / "dialogues.jsonl").read_text().splitlines()) == 5
    # judge-scored rubric beside the other metrics (rule judge by default), with 95 % CIs
    rub = s["metrics"]["rubric"]
    assert s["judge"] == "rule" and rub["judge"] == "rule"
    for item in ("history_taking", "safety"):
        m = rub[item]
        assert m["n"] + m["not_applicable"] == 5 and m["parse_failures"] == 0
        assert m["n"] == 0 or m["ci95"][0] <= m["mean"] <= m["ci95"][1]
    assert "rubric (rule judge" in res.output and "history taking" in res.output
    # the oracle asks the knowledge base's plain questions: no hallucinated facts, and the table says so
    assert s["metrics"]["hallucinated_facts"] == 0 and "hallucinated facts: 0" in res.output
    assert s["error_discovery"]["persona"]["by_type"]["hallucinated_fact"] == 0
    assert "hallucinated_fact" in res.output
    res = runner.invoke(app, ["dialogue", "eval", "--judge", "vibes", "--output", str(tmp_path / "j")])
    assert res.exit_code == 2 and "--judge 'vibes'" in res.output
    res = runner.invoke(app, ["dialogue", "eval", "--model", str(tmp_path / "nothing"), "--output", str(tmp_path / "x")])
    assert res.exit_code == 2 and "model folder not found" in res.output
    res = runner.invoke(app, ["dialogue", "train", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "no such pipeline spec" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: dialogue-train\nconfig: {grpo: {stepz: 3}}\n")
    res = runner.invoke(app, ["dialogue", "train", str(bad)])
    assert res.exit_code == 2 and "stepz" in res.output
    res = runner.invoke(app, ["dialogue", "chat", "--role", "nurse"])
    assert res.exit_code == 2 and "must be doctor or patient" in res.output


def test_chat_person_plays_doctor_with_clirunner():
    from medkit.dialogue.data import load_cases
    from medkit.dialogue.train_config import DataConfig

    _, _, held = load_cases(DataConfig(n_train=1, n_rl=0, n_eval=1, pool=120))
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
