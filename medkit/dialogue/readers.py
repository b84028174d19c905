"""Readers for real dialogue / QA datasets from local folders: DDXPlus and MedQA.

DDXPlus (Fansi Tchango et al., NeurIPS 2022 Datasets & Benchmarks), released layout::

    release_evidences.json     {code: {question_en, is_antecedent, data_type B|C|M, value_meaning, ...}}
    release_conditions.json    {name: {cond-name-eng, icd10-id, symptoms, antecedents, severity}}
    release_{train,validate,test}_patients[.csv]
                               CSV: AGE, SEX (M/F), PATHOLOGY, EVIDENCES ("['E_48', 'E_54_@_V_161']"),
                               INITIAL_EVIDENCE, DIFFERENTIAL_DIAGNOSIS ("[['Bronchite', 0.2], ...]")

A categorical / multi-choice answer ``E_54_@_V_161`` becomes its own binary
evidence grouped under its question (asking "Characterize your pain" reveals every
value); a question's default answer (``E_204_@_V_10`` "N", ``V_11`` "NA",
``V_123`` "nowhere", a scale's 0) is the absence of evidence, never an evidence.
:func:`ddxplus_knowledge_base` turns the release into a
:class:`medkit.synth.knowledge.KnowledgeBase` whose P(e | c) are smoothed
frequencies counted on the training patients, so the environment, the oracle and
the information-gain reward run unchanged on DDXPlus cases. The patients files may
carry ``.csv`` or no extension (the release zips' members are extension-less).

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

ANY = "(any)"    # value of the per-question "answered with a non-default value" evidence
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


# Answers that mean "no": the release's default_value of a question (0 for a scale or a yes/no
# question, V_10 "N", V_11 "NA", V_123 "nowhere"). A patient row lists them (E_204_@_V_10: "has not
# travelled"), but they are the absence of the finding, never a finding of their own.
_LEADS = re.compile(r"^(?:do|does|did|are|is|was|were|have|has|had|can|could)\s+(?:you|your|there)\s+"
                    r"(?:\s*(?:ever|recently|currently|constantly|suddenly|also|been|feel|felt|had|have|"
                    r"noticed|notice|experienced?|experiencing|lost|gained|taken|take|think)\b)*\s*", re.I)


def short_label(question: str, taken: set[str]) -> str:
    """A short, unique lay label for a DDXPlus question (what the doctor's ``ASK:`` names).

    Drops the leading "Do you have / Have you recently had ..." and any parenthesis; keeps the
    first clause (up to a comma) when it has 3 to 8 words, the whole rest when it has at most 9
    words, else its first 7 words; then adds words back until the label is unique among
    ``taken``. "Do you have a fever (either felt or measured ...)?" -> "a fever";
    "Characterize your pain:" -> "characterize your pain".
    """
    full = re.sub(r"\s*\([^)]*\)", "", question).strip().rstrip("?:.").strip()
    body = _LEADS.sub("", full, count=1).strip() or full
    words = body.split()
    clause = body.split(",")[0].split()
    n0 = len(clause) if 3 <= len(clause) <= 8 else len(words) if len(words) <= 9 else 7
    for n in range(max(n0, 1), len(words) + 1):
        cand = " ".join(words[:n]).rstrip(",;:").lower()
        if cand and cand not in taken:
            return cand
    cand, i = full.lower(), 2
    while cand in taken:
        cand, i = f"{full.lower()} {i}", i + 1
    return cand


def _evidence_defs(root: Path) -> tuple[dict, dict]:
    """``(questions, values)`` of release_evidences.json.

    ``questions``: ``{code: {"text", "antecedent", "type" (B/C/M), "default", "parent"}}``.
    ``values``: ``{code: {value_code: meaning}}`` for categorical / multi-choice questions, the
    default (negative) value left out; numeric scales (0..10, default 0) keep 1..10.
    """
    path = root / "release_evidences.json"
    data = _read_json(path)
    qs, vals = {}, {}
    for code, e in data.items():
        if not isinstance(e, dict) or "question_en" not in e:
            raise DatasetFormatError(path, f"evidence {code!r} has no question_en")
        dtype = str(e.get("data_type", "B"))
        if dtype not in ("B", "C", "M"):
            raise DatasetFormatError(path, f"evidence {code!r}: data_type {dtype!r} is not B, C or M")
        default = str(e.get("default_value", 0))
        parent = e.get("code_question")
        qs[code] = {"text": str(e["question_en"]).strip(), "antecedent": bool(e.get("is_antecedent", False)),
                    "type": dtype, "default": default, "parent": parent if parent and parent != code else None}
        if dtype == "B":
            continue
        meanings = e.get("value_meaning") or {}
        out = {}
        for v in e.get("possible-values") or list(meanings):
            if str(v) == default:
                continue
            m = meanings.get(v, v)
            out[str(v)] = str(m.get("en", v)) if isinstance(m, dict) else str(m)
        vals[code] = out
    return qs, vals


def present_evidences(codes: list[str], qs: dict, vals: dict, *, where: str = "") -> list[str]:
    """The present-evidence ids of a patient row: binary codes as they are, ``E_x_@_v`` values that
    are not the question's default (a default value is the answer "no"), in row order.

    Raises :class:`DatasetFormatError` (naming ``where``) for an unknown code or value."""
    out = []
    for c in codes:
        base, _, v = c.partition("_@_")
        if base not in qs:
            raise DatasetFormatError(where, f"evidence code {c!r} is not in release_evidences.json")
        q = qs[base]
        if not v:
            if q["type"] != "B":
                raise DatasetFormatError(where, f"evidence {c!r} is a {q['type']} question but has no value")
            out.append(c)
            continue
        if v == q["default"]:
            continue                                   # "N", "NA", "nowhere", 0: absent
        if v not in vals.get(base, {}):
            raise DatasetFormatError(where, f"evidence {c!r}: value {v!r} is not one of the question's values")
        out.append(c)
    return list(dict.fromkeys(out))


def with_any(present: list[str]) -> list[str]:
    """``present`` plus ``E_x_@_(any)`` for every categorical / multi-choice question answered
    with a non-default value (see :func:`ddxplus_knowledge_base`)."""
    groups = dict.fromkeys(e.split("_@_")[0] for e in present if "_@_" in e)
    return list(present) + [f"{g}_@_{ANY}" for g in groups]


def _condition_defs(root: Path) -> dict:
    path = root / "release_conditions.json"
    data = _read_json(path)
    for name, c in data.items():
        if not isinstance(c, dict) or "cond-name-eng" not in c:
            raise DatasetFormatError(path, f"condition {name!r} has no cond-name-eng")
    return data


def ddxplus_knowledge_base(root: str | Path, *, split: str = "train", max_rows: int | None = None,
                           alpha: float = 0.5):
    """A :class:`~medkit.synth.knowledge.KnowledgeBase` from a DDXPlus release folder.

    Evidences: every yes/no question is one evidence; every non-default value of a
    categorical / multi-choice question (``E_55_@_V_29``: pain in the forehead) is one
    evidence whose ``group`` is the question, so asking the question reveals all its values
    (:attr:`KnowledgeBase.questions`), together with ``E_x_@_(any)``, present when the answer
    is not the default: a "no" is then one calibrated factor P(no value | c) in the posterior,
    not the absence of each of 164 locations counted as independent evidence. A question asked only after a yes to another
    (``code_question``: pain location after "any pain?") records that parent.

    P(e | c) = (n(e, c) + alpha) / (n(c) + 2 alpha) over the ``split`` patients (the
    first ``max_rows``), for the evidences release_conditions.json lists for c (others get
    the background rate); prevalence = those counts; age = (min, median, max); no tests
    (DDXPlus has no examinations), no red flags. Conditions keep their English name; the
    condition id is the slug of the release's key.
    """
    from ..synth.knowledge import Condition, Evidence, KnowledgeBase

    root = Path(root)
    qs, vals = _evidence_defs(root)
    conds = _condition_defs(root)
    rows = read_ddxplus_patients(root, split, limit=max_rows)
    where = patients_file(root, split)
    by_c: dict[str, list[list[str]]] = defaultdict(list)
    demo: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in rows:
        if r["pathology"] not in conds:
            raise DatasetFormatError(where, f"row {r['row']}: PATHOLOGY {r['pathology']!r} is not in "
                                            "release_conditions.json")
        by_c[r["pathology"]].append(present_evidences(r["evidences"], qs, vals, where=f"{where} row {r['row']}"))
        demo[r["pathology"]].append((r["age"], r["sex"]))
    evidences, labels, taken = {}, {}, set()
    for code, q in qs.items():
        etype = "history" if q["antecedent"] else "symptom"
        labels[code] = short_label(q["text"], taken)
        taken.add(labels[code])
        if q["type"] == "B":
            evidences[code] = Evidence(code, etype, question=q["text"], say=labels[code], salience=1,
                                       parent=q["parent"])
            continue
        # "any value": present when the answer is not the default. One calibrated factor for a "no"
        # answer, where the absence of each of 164 pain locations would count one "no" 164 times
        any_id = f"{code}_@_{ANY}"
        evidences[any_id] = Evidence(any_id, etype, question=q["text"], say=labels[code], salience=0, group=code,
                                     value=ANY, parent=q["parent"])
        for v, meaning in vals[code].items():
            eid = f"{code}_@_{v}"
            evidences[eid] = Evidence(eid, etype, question=f"{q['text']} - {meaning}", say=labels[code], salience=1,
                                      group=code, value=meaning, parent=q["parent"])
    conditions = []
    for name, c in conds.items():
        pats = by_c.get(name, [])
        listed = set(c.get("symptoms") or {}) | set(c.get("antecedents") or {})
        counts = Counter(e for p in pats for e in with_any(p))
        lik = {eid: float((counts.get(eid, 0) + alpha) / (len(pats) + 2 * alpha))
               for eid in evidences if eid.split("_@_")[0] in listed}
        ages = [a for a, _ in demo.get(name, [])] or [0, 40, 100]
        lo, mid, hi = float(min(ages)), float(np.median(ages)), float(max(ages))
        sev = int(c.get("severity", 3))
        female = float(np.mean([s == "female" for _, s in demo[name]])) if demo.get(name) else 0.5
        conditions.append(Condition(
            _slug(name), str(c["cond-name-eng"]), str(c.get("icd10-id", "")), "ddxplus", float(len(pats) + 1),
            "emergency" if sev <= 2 else "urgent" if sev == 3 else "routine",
            (lo, mid, hi if hi > lo else lo + 1), min(max(female, 0.02), 0.98), lik, (), (),
            str(root / "release_conditions.json")))
    digest = hashlib.sha256()
    for f in ("release_evidences.json", "release_conditions.json"):
        digest.update((root / f).read_bytes())
    digest.update(where.read_bytes())
    kb = KnowledgeBase(evidences, {}, conditions, root, digest.hexdigest(), labels=labels)
    kb._cache["ddxplus_names"] = {name: _slug(name) for name in conds}
    kb._cache["ddxplus_defs"] = (qs, vals)
    return kb


def read_ddxplus_cases(root: str | Path, split: str, kb, *, limit: int | None = None, seed: int = 0,
                       offset: int = 0) -> list[dict]:
    """DDXPlus patients of ``split`` as medkit case dicts (the :mod:`medkit.synth.cases` schema).

    Default answers ("N", "NA", "nowhere", 0) are dropped (absent evidence); a persona is
    sampled from ``(seed, row)``; rows ``offset .. offset + limit``. ``kb`` is
    :func:`ddxplus_knowledge_base` of the same release."""
    from ..synth.personas import sample_persona

    root = Path(root)
    names = kb._cache.get("ddxplus_names") or {}
    qs, vals = kb._cache.get("ddxplus_defs") or _evidence_defs(root)
    path = patients_file(root, split)
    rows = read_ddxplus_patients(root, split, limit=None if limit is None else offset + limit)[offset:]
    out = []
    for r in rows:
        cid = names.get(r["pathology"])
        if cid is None:
            raise DatasetFormatError(path, f"row {r['row']}: PATHOLOGY {r['pathology']!r} is not in release_conditions.json")
        present = with_any(present_evidences(r["evidences"], qs, vals, where=f"{path} row {r['row']}"))
        unknown = [e for e in present + [r["initial"]] if e not in kb.evidences]
        if unknown:
            raise DatasetFormatError(path, f"row {r['row']}: evidence code(s) {unknown[:3]} not in release_evidences.json")
        if r["initial"] not in present:
            present.insert(0, r["initial"])
        cond = kb.condition(cid)
        by_type = {t: [] for t in ("symptom", "history", "exam", "lab", "imaging")}
        for e in present:
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
