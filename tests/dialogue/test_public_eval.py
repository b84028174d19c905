"""``medkit.evaluate_dialogue``: the one-line Python call behind ``medkit dialogue eval``, on the
genuine DDXPlus release files."""

from __future__ import annotations

import json

import medkit


def test_evaluate_dialogue_on_genuine_ddxplus_writes_the_summary(realformat, tmp_path):
    out = tmp_path / "ev"
    s = medkit.evaluate_dialogue("oracle", realformat / "ddxplus", "test", output=out, n_cases=6, judge="none")
    assert s["n_cases"] == 6
    assert 0.0 <= s["top1"] <= s["top3"] <= 1.0
    assert s["mean_turns"] > 0
    written = json.loads((out / "summary.json").read_text())
    assert {k: written[k] for k in ("top1", "top3", "n_cases", "mean_turns")} == {
        k: s[k] for k in ("top1", "top3", "n_cases", "mean_turns")}
