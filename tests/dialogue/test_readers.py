"""DDXPlus and MedQA readers on small fixture files in their published layouts."""

from __future__ import annotations

import csv
import io
import json

import pytest

from medkit.dialogue.readers import (
    DatasetFormatError,
    ddxplus_knowledge_base,
    medqa_prompt,
    read_ddxplus_cases,
    read_ddxplus_patients,
    read_medqa,
)

EVIDENCES = {
    "E_91": {"name": "E_91", "question_en": "Do you have a fever?", "is_antecedent": False, "data_type": "B",
             "value_meaning": {}, "possible-values": []},
    "E_53": {"name": "E_53", "question_en": "Do you have pain somewhere?", "is_antecedent": False, "data_type": "B",
             "value_meaning": {}, "possible-values": []},
    "E_54": {"name": "E_54", "question_en": "Characterize your pain:", "is_antecedent": False, "data_type": "M",
             "value_meaning": {"V_161": {"en": "sensitive", "fr": "sensible"}, "V_183": {"en": "heavy", "fr": "lourde"}},
             "possible-values": ["V_161", "V_183"]},
    "E_204": {"name": "E_204", "question_en": "Have you recently had a viral infection?", "is_antecedent": True,
              "data_type": "B", "value_meaning": {}, "possible-values": []},
}
CONDITIONS = {
    "Bronchite": {"condition_name": "Bronchite", "cond-name-eng": "Bronchitis", "icd10-id": "J40", "severity": 4,
                  "symptoms": {"E_91": {}, "E_53": {}, "E_54": {}}, "antecedents": {"E_204": {}}},
    "Pneumonie": {"condition_name": "Pneumonie", "cond-name-eng": "Pneumonia", "icd10-id": "J17", "severity": 3,
                  "symptoms": {"E_91": {}, "E_53": {}}, "antecedents": {}},
}
HEADER = "AGE,DIFFERENTIAL_DIAGNOSIS,SEX,PATHOLOGY,EVIDENCES,INITIAL_EVIDENCE\n"


def _row(age, sex, path, ev, init, dd="[['Bronchite', 0.6], ['Pneumonie', 0.4]]"):
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([age, dd, sex, path, ev, init])
    return buf.getvalue()


def _write(root, train_rows, test_rows=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "release_evidences.json").write_text(json.dumps(EVIDENCES))
    (root / "release_conditions.json").write_text(json.dumps(CONDITIONS))
    (root / "release_train_patients.csv").write_text(HEADER + "".join(train_rows))
    (root / "release_test_patients").write_text(HEADER + "".join(test_rows or train_rows[:1]))  # no .csv, as released
    return root


TRAIN = [_row(40, "M", "Bronchite", "['E_91', 'E_53', 'E_54_@_V_161', 'E_204']", "E_53"),
         _row(35, "F", "Bronchite", "['E_53', 'E_54_@_V_161']", "E_53"),
         _row(70, "F", "Pneumonie", "['E_91', 'E_53']", "E_91"),
         _row(66, "M", "Pneumonie", "['E_91']", "E_91")]


def test_ddxplus_reads_cases_and_builds_a_knowledge_base(tmp_path):
    root = _write(tmp_path / "ddx", TRAIN)
    rows = read_ddxplus_patients(root, "train")
    assert [r["pathology"] for r in rows] == ["Bronchite", "Bronchite", "Pneumonie", "Pneumonie"]
    assert rows[0]["differential"] == [("Bronchite", 0.6), ("Pneumonie", 0.4)] and rows[1]["sex"] == "female"
    kb = ddxplus_knowledge_base(root)
    assert [c.name for c in kb.conditions] == ["Bronchitis", "Pneumonia"]
    br = kb.condition("bronchite")
    # smoothed frequency: E_54_@_V_161 in 2 of 2 bronchitis patients -> (2 + .5) / (2 + 1) = 0.8333
    assert br.likelihoods["E_54_@_V_161"] == pytest.approx(2.5 / 3)
    assert br.likelihoods["E_91"] == pytest.approx(1.5 / 3)
    assert "E_204" not in kb.condition("pneumonie").likelihoods          # not listed for pneumonia
    assert kb.evidences["E_204"].type == "history" and "sensitive" in kb.evidences["E_54_@_V_161"].question
    # a multi-choice question is one askable question; its "(any)" evidence is counted too
    assert kb.questions["E_54"].evidences == ("E_54_@_(any)", "E_54_@_V_161", "E_54_@_V_183")
    assert br.likelihoods["E_54_@_(any)"] == pytest.approx(2.5 / 3)
    cases = read_ddxplus_cases(root, "test", kb)
    c = cases[0]
    assert c["diagnosis"] == {"id": "bronchite", "name": "Bronchitis", "icd10": "J40", "system": "ddxplus",
                              "urgency": "routine"}
    assert c["chief_complaint"]["evidence"] == "E_53" and "E_204" in c["evidences"]["history"]
    # the environment and the oracle run unchanged on DDXPlus cases
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.rollout import make_envs, run_episodes

    rec = run_episodes(make_envs(cases, kb, max_turns=5), OracleDoctor(kb))[0]
    assert rec["diagnosed"] and rec["truth"]["id"] == "bronchite"


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: (r / "release_conditions.json").unlink(), "release_conditions.json: file not found"),
    (lambda r: (r / "release_evidences.json").write_text("{not json"), "release_evidences.json: invalid JSON"),
    (lambda r: (r / "release_train_patients.csv").write_text("AGE,SEX\n1,M\n"), "missing column(s)"),
    (lambda r: (r / "release_train_patients.csv").write_text(HEADER + _row(3, "M", "Bronchite", "['E_91'", "E_91")),
     "release_train_patients.csv: row 2"),
    (lambda r: (r / "release_train_patients.csv").write_text(HEADER + _row(3, "X", "Bronchite", "['E_91']", "E_91")),
     "row 2"),
    (lambda r: (r / "release_train_patients.csv").write_text(HEADER + _row(3, "M", "Grippe", "['E_91']", "E_91")),
     "PATHOLOGY 'Grippe'"),
])
def test_ddxplus_bad_input_names_the_file(tmp_path, mutate, needle):
    root = _write(tmp_path / "ddx", TRAIN)
    mutate(root)
    with pytest.raises(DatasetFormatError, match=None) as e:
        ddxplus_knowledge_base(root)
    assert needle in str(e.value) and str(root) in str(e.value)


def test_ddxplus_unknown_evidence_code_in_a_case(tmp_path):
    root = _write(tmp_path / "ddx", TRAIN, [_row(40, "M", "Bronchite", "['E_999']", "E_53")])
    kb = ddxplus_knowledge_base(root)
    with pytest.raises(DatasetFormatError, match=r"release_test_patients row 2: evidence code 'E_999' is not in"):
        read_ddxplus_cases(root, "test", kb)


# --------------------------------------------------------------------------- genuine DDXPlus files
def test_ddxplus_genuine_defaults_are_absent_evidence(realformat):
    """Answers that mean "no" (E_204_@_V_10 "N", V_11 "NA", V_123 "nowhere", a scale's 0) never become
    evidences; every other value does, grouped under its question."""
    from medkit.dialogue.readers import _evidence_defs

    root = realformat / "ddxplus"
    kb = ddxplus_knowledge_base(root)
    assert len(kb.conditions) == 49 and len(kb.questions) == 223
    labels = [q.label for q in kb.questions.values()]
    assert len(set(labels)) == 223 and max(len(x.split()) for x in labels) <= 16
    qs, _ = _evidence_defs(root)
    defaults = {f"{c}_@_{q['default']}" for c, q in qs.items() if q["type"] != "B"}
    assert {"E_204_@_V_10", "E_54_@_V_11", "E_55_@_V_123", "E_56_@_0"} <= defaults
    assert not defaults & set(kb.evidences)
    raw = read_ddxplus_patients(root, "test")
    cases = read_ddxplus_cases(root, "test", kb)
    assert len(cases) == len(raw) == 1311
    n_default = sum(e in defaults for r in raw for e in r["evidences"])
    assert n_default > 1000                                  # the genuine rows do list "no" answers ...
    for r, c in zip(raw, cases):                             # ... and none of them is kept as a finding
        kept = {e for v in c["evidences"].values() for e in v}
        assert not kept & defaults
        assert {e for e in r["evidences"] if e not in defaults} <= kept
    # a multi-choice answer comes back as its values; a "no" to a parent question answers its follow-ups
    from medkit.dialogue.env import DialogueEnv
    from medkit.dialogue.patient import PersonaPatient

    c = next(c for c in cases if any(e.startswith("E_55_@_V") for e in c["evidences"]["symptom"]))
    env = DialogueEnv(c, PersonaPatient(c, kb), kb)
    res = env.step(f"ASK: {kb.questions['E_55'].label}")
    values = [kb.evidences[e].value for e in c["evidences"]["symptom"] if e.startswith("E_55_@_V")]
    assert all(v in res.observation for v in values) and env.known["E_55_@_(any)"] is True
    assert not any(v is False for e, v in env.known.items() if e.startswith("E_55_@_V"))   # no 163-fold "no"
    c = next(c for c in cases if "E_53" not in c["evidences"]["symptom"] and c["chief_complaint"]["evidence"] != "E_53")
    env = DialogueEnv(c, PersonaPatient({**c, "persona": {}}, kb), kb)
    env.step(f"ASK: {kb.questions['E_53'].label}")
    assert env.known["E_53"] is False and {"E_54", "E_55", "E_56", "E_57"} <= set(env.asked_q)


def test_ddxplus_release_layout_without_extensions(realformat, tmp_path):
    """The release zips hold ``release_train_patients`` (no .csv): read the same rows."""
    import shutil

    src = realformat / "ddxplus"
    dst = tmp_path / "ddx"
    dst.mkdir()
    for f in ("release_evidences.json", "release_conditions.json"):
        shutil.copyfile(src / f, dst / f)
    for split in ("train", "test"):
        shutil.copyfile(src / f"release_{split}_patients.csv", dst / f"release_{split}_patients")
    assert read_ddxplus_patients(dst, "test", limit=20) == read_ddxplus_patients(src, "test", limit=20)
    kb = ddxplus_knowledge_base(dst)
    assert len(read_ddxplus_cases(dst, "test", kb, limit=5)) == 5
    with pytest.raises(DatasetFormatError, match="release_validate_patients.csv: file not found"):
        read_ddxplus_patients(dst, "validate")


def test_oracle_on_genuine_ddxplus_validation_rows(realformat):
    """The knowledge base counted on the genuine training rows carries the diagnosis (measured 0.91 top-1
    on all 300 validation rows with 15 turns; chance is 1/49)."""
    from medkit.dialogue.oracle import OracleDoctor
    from medkit.dialogue.rollout import make_envs, run_episodes

    root = realformat / "ddxplus"
    kb = ddxplus_knowledge_base(root)
    cases = read_ddxplus_cases(root, "validate", kb, limit=60)
    recs = run_episodes(make_envs(cases, kb, max_turns=15), OracleDoctor(kb, stop_p=0.95))
    assert sum(r["success"] for r in recs) / len(recs) >= 0.8
    assert all(r["format_errors"] == 0 and r["diagnosed"] for r in recs)


def test_medqa_reader(tmp_path):
    d = tmp_path / "medqa" / "questions" / "US"
    d.mkdir(parents=True)
    lines = [{"question": "Fever and neck stiffness. Next step?", "options": {"A": "CT head", "B": "Lumbar puncture"},
              "answer_idx": "B", "meta_info": "step1"},
             {"question": "Most common cause?", "options": ["Virus", "Bacteria", "Fungus"], "answer_idx": "A"}]
    (d / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = read_medqa(tmp_path / "medqa", "test")
    assert [i["answer"] for i in items] == ["Lumbar puncture", "Virus"]
    assert items[1]["options"] == {"A": "Virus", "B": "Bacteria", "C": "Fungus"}
    assert "B. Lumbar puncture" in medqa_prompt(items[0])
    (d / "test.jsonl").write_text(json.dumps({**lines[0], "answer_idx": "E"}) + "\n")
    with pytest.raises(DatasetFormatError, match=r"test.jsonl: line 1: answer_idx 'E'"):
        read_medqa(d / "test.jsonl")
    (d / "test.jsonl").write_text('{"question": "x"\n')
    with pytest.raises(DatasetFormatError, match="line 1: invalid JSON"):
        read_medqa(d / "test.jsonl")
    with pytest.raises(DatasetFormatError, match="no train.jsonl"):
        read_medqa(tmp_path / "medqa", "train")
