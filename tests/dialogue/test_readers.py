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
    with pytest.raises(DatasetFormatError, match=r"release_test_patients: row 2: evidence code\(s\) \['E_999'\]"):
        read_ddxplus_cases(root, "test", kb)


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
