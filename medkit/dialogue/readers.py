"""Readers for real dialogue / QA datasets from local folders: DDXPlus and MedQA.

DDXPlus (Fansi Tchango et al., NeurIPS 2022 Datasets & Benchmarks), released layout::

    release_evidences.json     {code: {question_en, is_antecedent, data_type B|C|M, value_meaning, ...}}
    release_conditions.json    {name: {cond-name-eng, icd10-id, symptoms, antecedents, severity}}
    release_{train,validate,test}_patients[.csv]
                               CSV: AGE, SEX (M/F), PATHOLOGY, EVIDENCES ("['E_48', 'E_54_@_V_161']"),
                               INITIAL_EVIDENCE, DIFFERENTIAL_DIAGNOSIS ("[['Bronchite', 0.2], ...]")

A categorical / multi-choice answer ``E_54_@_V_161`` becomes its own binary
evidence (question + value meaning). :func:`ddxplus_knowledge_base` turns the
release into a :class:`medkit.synth.knowledge.KnowledgeBase` whose P(e | c) are
smoothed frequencies counted on the training patients, so the environment, the
oracle and the information-gain reward run unchanged on DDXPlus cases.

MedQA (Jin et al. 2021) jsonl: one question per line with ``question``,
``options`` (``{"A": text, ...}`` or a list) and ``answer_idx`` (a letter).

Every malformed input raises :class:`DatasetFormatError` naming the file (and row).
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from ..io.errors import MedkitInputError

CSV_COLUMNS = ("AGE", "SEX", "PATHOLOGY", "EVIDENCES", "INITIAL_EVIDENCE", "DIFFERENTIAL_DIAGNOSIS")
SPLITS = ("train", "validate", "test")


class DatasetFormatError(MedkitInputError):
    """A dataset file that is missing or does not follow its published layout."""


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DatasetFormatError(path, "file not found (expected the DDXPlus release layout)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(path, f"invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "must hold a JSON object keyed by code / name")
    return data


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_") or "x"


def patients_file(root: str | Path, split: str) -> Path:
    """``release_{split}_patients`` with or without ``.csv``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(root)
    for name in (f"release_{split}_patients.csv", f"release_{split}_patients"):
        if (root / name).is_file():
            return root / name
    raise DatasetFormatError(root / f"release_{split}_patients.csv", "file not found (also tried without .csv)")


def read_ddxplus_patients(root: str | Path, split: str, limit: int | None = None) -> list[dict]:
    """Rows of a DDXPlus patients CSV, parsed: ``{row, age, sex, pathology, evidences, initial, differential}``."""
    path = patients_file(root, split)
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetFormatError(path, f"missing column(s) {missing}; found {reader.fieldnames}")
        for i, r in enumerate(reader, start=2):        # row 1 is the header
            if limit is not None and len(out) >= limit:
                break
            try:
                age = int(float(r["AGE"]))
                sex = {"M": "male", "F": "female"}[r["SEX"].strip().upper()]
                ev = ast.literal_eval(r["EVIDENCES"])
                dd = ast.literal_eval(r["DIFFERENTIAL_DIAGNOSIS"]) if r["DIFFERENTIAL_DIAGNOSIS"].strip() else []
                if not isinstance(ev, list) or not all(isinstance(e, str) for e in ev):
                    raise ValueError("EVIDENCES is not a list of codes")
                if not isinstance(dd, list) or not all(isinstance(d, (list, tuple)) and len(d) == 2 for d in dd):
                    raise ValueError("DIFFERENTIAL_DIAGNOSIS is not a list of [name, probability]")
            except (ValueError, KeyError, SyntaxError) as e:
                raise DatasetFormatError(path, f"row {i}: {e!r}") from None
            if not r["PATHOLOGY"].strip() or not r["INITIAL_EVIDENCE"].strip():
                raise DatasetFormatError(path, f"row {i}: empty PATHOLOGY or INITIAL_EVIDENCE")
            out.append({"row": i, "age": age, "sex": sex, "pathology": r["PATHOLOGY"].strip(), "evidences": ev,
                        "initial": r["INITIAL_EVIDENCE"].strip(), "differential": [(str(a), float(b)) for a, b in dd]})
    return out


def _evidence_defs(root: Path) -> dict:
    """``{evidence_id: (question text, is_antecedent)}`` including value-level ids ``E_x_@_V_y``."""
    path = root / "release_evidences.json"
    data = _read_json(path)
    out = {}
    for code, e in data.items():
        if not isinstance(e, dict) or "question_en" not in e:
            raise DatasetFormatError(path, f"evidence {code!r} has no question_en")
        q, ante = str(e["question_en"]).strip(), bool(e.get("is_antecedent", False))
        out[code] = (q, ante)
        for v, meaning in (e.get("value_meaning") or {}).items():
            text = meaning.get("en", v) if isinstance(meaning, dict) else str(meaning)
            out[f"{code}_@_{v}"] = (f"{q} - {text}", ante)
        for v in e.get("possible-values") or []:
            out.setdefault(f"{code}_@_{v}", (f"{q} - {v}", ante))
    return out


def _condition_defs(root: Path) -> dict:
    path = root / "release_conditions.json"
    data = _read_json(path)
    for name, c in data.items():
        if not isinstance(c, dict) or "cond-name-eng" not in c:
            raise DatasetFormatError(path, f"condition {name!r} has no cond-name-eng")
    return data


def ddxplus_knowledge_base(root: str | Path, *, max_rows: int = 20000, alpha: float = 0.5):
    """A :class:`~medkit.synth.knowledge.KnowledgeBase` from a DDXPlus release folder.

    P(e | c) = (n(e, c) + alpha) / (n(c) + 2 alpha) over the first ``max_rows`` training
    patients, for the evidences release_conditions.json lists for c (others get the
    background rate); prevalence = training counts; age = (min, median, max); no tests
    (DDXPlus has no examinations), no red flags.
    """
    from ..synth.knowledge import Condition, Evidence, KnowledgeBase

    root = Path(root)
    evdefs, conds = _evidence_defs(root), _condition_defs(root)
    rows = read_ddxplus_patients(root, "train", limit=max_rows)
    by_c: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["pathology"] not in conds:
            raise DatasetFormatError(patients_file(root, "train"),
                                     f"row {r['row']}: PATHOLOGY {r['pathology']!r} is not in release_conditions.json")
        by_c[r["pathology"]].append(r)
    evidences = {}
    for eid, (q, ante) in evdefs.items():
        evidences[eid] = Evidence(eid, "history" if ante else "symptom", question=q,
                                  say=f"a yes to '{q.rstrip('?')}'", salience=1)
    conditions = []
    for name, c in conds.items():
        pats = by_c.get(name, [])
        listed = set(c.get("symptoms") or {}) | set(c.get("antecedents") or {})
        counts = Counter(e for p in pats for e in p["evidences"])
        lik = {}
        for eid in evidences:
            if eid in listed or eid.split("_@_")[0] in listed:
                lik[eid] = float((counts.get(eid, 0) + alpha) / (len(pats) + 2 * alpha))
        ages = [p["age"] for p in pats] or [0, 40, 100]
        lo, mid, hi = float(min(ages)), float(np.median(ages)), float(max(ages))
        sev = int(c.get("severity", 3))
        conditions.append(Condition(
            _slug(name), str(c["cond-name-eng"]), str(c.get("icd10-id", "")), "ddxplus", float(len(pats) + 1),
            "emergency" if sev <= 2 else "urgent" if sev == 3 else "routine",
            (lo, mid, hi if hi > lo else lo + 1), float(np.mean([p["sex"] == "female" for p in pats])) if pats else 0.5,
            lik, (), (), str(root / "release_conditions.json")))
    digest = hashlib.sha256()
    for f in ("release_evidences.json", "release_conditions.json"):
        digest.update((root / f).read_bytes())
    kb = KnowledgeBase(evidences, {}, conditions, root, digest.hexdigest())
    kb._cache["ddxplus_names"] = {name: _slug(name) for name in conds}
    return kb


def read_ddxplus_cases(root: str | Path, split: str, kb, *, limit: int | None = None, seed: int = 0) -> list[dict]:
    """DDXPlus patients as medkit case dicts (the :mod:`medkit.synth.cases` schema; a persona is sampled)."""
    from ..synth.personas import sample_persona

    root = Path(root)
    names = kb._cache.get("ddxplus_names") or {}
    path = patients_file(root, split)
    out = []
    for r in read_ddxplus_patients(root, split, limit=limit):
        cid = names.get(r["pathology"])
        if cid is None:
            raise DatasetFormatError(path, f"row {r['row']}: PATHOLOGY {r['pathology']!r} is not in release_conditions.json")
        unknown = [e for e in r["evidences"] + [r["initial"]] if e not in kb.evidences]
        if unknown:
            raise DatasetFormatError(path, f"row {r['row']}: evidence code(s) {unknown[:3]} not in release_evidences.json")
        cond = kb.condition(cid)
        by_type = {t: [] for t in ("symptom", "history", "exam", "lab", "imaging")}
        for e in r["evidences"]:
            by_type[kb.evidences[e].type].append(e)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r["row"],)))
        out.append({
            "case_id": f"ddxplus_{split}_{r['row']:07d}", "split": split, "age": r["age"], "sex": r["sex"],
            "diagnosis": {"id": cid, "name": cond.name, "icd10": cond.icd10, "system": "ddxplus", "urgency": cond.urgency},
            "chief_complaint": {"evidence": r["initial"], "text": kb.evidences[r["initial"]].say},
            "evidences": by_type, "results": {}, "indicated_tests": [], "red_flags": [],
            "differential": [{"id": names.get(n, _slug(n)), "name": n, "p": round(p, 4)} for n, p in r["differential"]],
            "persona": sample_persona(r["age"], r["sex"], cond.urgency, rng),
        })
    return out


def read_medqa(path: str | Path, split: str = "test") -> list[dict]:
    """MedQA questions from a jsonl file, or from ``<folder>/**/{split}.jsonl``.

    Returns ``[{id, question, options: {letter: text}, answer_idx, answer}]``.
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob(f"{split}.jsonl")) or sorted(path.rglob(f"*{split}*.jsonl"))
        if not found:
            raise DatasetFormatError(path, f"no {split}.jsonl (MedQA layout) under this folder")
        path = found[0]
    if not path.exists():
        raise DatasetFormatError(path, "file not found")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(path, f"line {i}: invalid JSON ({e.msg})") from None
        if not isinstance(q, dict) or not all(k in q for k in ("question", "options", "answer_idx")):
            raise DatasetFormatError(path, f"line {i}: needs question, options and answer_idx")
        opts = q["options"]
        if isinstance(opts, list):
            opts = {chr(65 + j): o for j, o in enumerate(opts)}
        if not isinstance(opts, dict) or not opts:
            raise DatasetFormatError(path, f"line {i}: options must be a mapping letter -> text or a list")
        if q["answer_idx"] not in opts:
            raise DatasetFormatError(path, f"line {i}: answer_idx {q['answer_idx']!r} is not one of {sorted(opts)}")
        out.append({"id": f"medqa_{split}_{i:06d}", "question": str(q["question"]),
                    "options": {str(k): str(v) for k, v in opts.items()}, "answer_idx": q["answer_idx"],
                    "answer": str(opts[q["answer_idx"]])})
    return out


def medqa_prompt(item: dict) -> str:
    """A single-turn multiple-choice prompt; the answer is the letter (score with
    ``medkit.rl.exact_answer_reward([...], pattern=r"<answer>(.*?)</answer>")``)."""
    opts = "\n".join(f"{k}. {v}" for k, v in sorted(item["options"].items()))
    return f"{item['question']}\n{opts}\nAnswer with <answer>LETTER</answer>."
