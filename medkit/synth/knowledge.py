"""The clinical knowledge base behind :mod:`medkit.synth.cases`: load, validate, infer.

The knowledge base is data, not code (``medkit/synth/data``):

- ``evidences.yaml``: the shared evidence vocabulary. Every evidence has a type
  (``symptom``, ``history`` (DDXPlus "antecedent"), ``exam``, ``lab``,
  ``imaging``); symptoms and history carry a lay question, exam/lab/imaging
  findings name the test that reveals them. ``tests`` lists those tests.
- ``conditions/*.yaml``: one file per organ system, each condition with
  ``id, name, icd10, system, prevalence, urgency, demographics, symptoms,
  antecedents, exam, lab, imaging, red_flags, tests``.

Units and meaning:

- ``prevalence`` is a *relative* prior: roughly presentations per 10,000 adult
  emergency / urgent-care attendances. Only ratios matter; priors are
  normalised over the knowledge base.
- ``demographics.age = [min, mode, max]`` (years) is a triangular density;
  ``demographics.female`` is P(sex = female | condition).
- Every number under ``symptoms/antecedents/exam/lab/imaging`` is
  P(evidence present | condition). An evidence a condition does not list is
  present with its vocabulary ``base`` rate (population prevalence of common
  risk factors: smoker 0.2, hypertension 0.2, ...) or else a small
  ``background_rate`` (noise; default 0.01).

The same naive-Bayes model generates cases and scores them
(:func:`posterior`): evidences are conditionally independent given the
condition, so P(c | E+, E-, age, sex) is proportional to
prior(c) p(age|c) P(sex|c) prod_{e in E+} P(e|c) prod_{e in E-} (1 - P(e|c)).
Evidences neither present nor absent are marginalised out (left out).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..io.errors import MedkitInputError

DATA_DIR = Path(__file__).parent / "data"
BACKGROUND_RATE = 0.01
MIN_CONDITIONS = 40

# Condition-file section -> evidence type. "history" is DDXPlus's "antecedent".
SECTIONS = {"symptoms": "symptom", "antecedents": "history", "exam": "exam", "lab": "lab", "imaging": "imaging"}
EVIDENCE_TYPES = tuple(SECTIONS.values())
SYSTEMS = (
    "cardiovascular", "respiratory", "gastrointestinal", "renal_urological", "neurological",
    "infectious", "endocrine_metabolic", "musculoskeletal", "haematological",
    "gynaecological_obstetric", "ent_eye", "dermatological", "allergy_immunology",
    "psychiatric", "toxicological",
)
URGENCY = ("routine", "urgent", "emergency")
_ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")
_CONDITION_KEYS = {"id", "name", "icd10", "system", "prevalence", "urgency", "demographics",
                   "red_flags", "tests", *SECTIONS}
_REQUIRED = ("id", "name", "icd10", "prevalence", "urgency", "demographics", "symptoms", "red_flags", "tests")
# Log-space clipping: a table value of exactly 0 or 1 would make one contrary
# observation veto a condition outright (log 0); real patients contradict textbooks.
_EPS = 1e-3


class KnowledgeBaseError(MedkitInputError):
    """A knowledge-base file that does not validate; the message names the file and condition."""


@dataclass(frozen=True)
class Evidence:
    """One shared evidence. ``question``/``say`` for symptom/history, ``test``/``finding`` otherwise."""

    id: str
    type: str
    question: str = ""
    say: str = ""
    salience: int = 0
    test: str = ""
    finding: str = ""
    sex: str | None = None
    base: float | None = None
    group: str | None = None      # the question that reveals it (DDXPlus multi-choice); None: its own question
    value: str = ""               # the answer it stands for within its group ("forehead", "7")
    parent: str | None = None     # question asked only after a yes to this one (DDXPlus code_question)

    @property
    def antecedent(self) -> bool:
        """DDXPlus distinction: history / risk factor (True) versus a current symptom or finding."""
        return self.type == "history"


@dataclass(frozen=True)
class Test:
    id: str
    name: str
    kind: str
    normal: str


@dataclass(frozen=True)
class Question:
    """One askable question: its short ``label`` (what the doctor's ``ASK:`` names), the lay
    ``text``, and the evidences its answer reveals (one for a yes/no question, every non-default
    value of a DDXPlus categorical / multi-choice question)."""

    id: str
    label: str
    text: str
    evidences: tuple[str, ...]
    type: str
    sex: str | None = None
    parent: str | None = None     # a no to this question means no to this one too (pain -> pain location)


@dataclass(frozen=True)
class Condition:
    id: str
    name: str
    icd10: str
    system: str
    prevalence: float
    urgency: str
    age: tuple[float, float, float]
    female: float
    likelihoods: dict[str, float]
    red_flags: tuple[str, ...]
    tests: tuple[str, ...]
    source: str


@dataclass
class KnowledgeBase:
    """Validated conditions and vocabulary, plus the arrays the sampler and posterior use.

    ``likelihood`` is ``(C, E)``: P(e | c) where condition c lists evidence e,
    NaN elsewhere (filled with the background rate on demand).
    """

    evidences: dict[str, Evidence]
    tests: dict[str, Test]
    conditions: list[Condition]
    root: Path
    sha256: str
    labels: dict[str, str] = field(default_factory=dict)   # question id -> short label (DDXPlus)
    ev_ids: list[str] = field(init=False)
    ev_index: dict[str, int] = field(init=False)
    cond_index: dict[str, int] = field(init=False)
    likelihood: np.ndarray = field(init=False)
    log_prior: np.ndarray = field(init=False)
    _cache: dict = field(init=False, default_factory=dict, repr=False)
    _age: np.ndarray = field(init=False, repr=False)
    _female: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.ev_ids = list(self.evidences)
        self.ev_index = {e: i for i, e in enumerate(self.ev_ids)}
        self.cond_index = {c.id: i for i, c in enumerate(self.conditions)}
        L = np.full((len(self.conditions), len(self.ev_ids)), np.nan)
        for i, c in enumerate(self.conditions):
            for e, p in c.likelihoods.items():
                L[i, self.ev_index[e]] = p
        self.likelihood = L
        prev = np.array([c.prevalence for c in self.conditions], dtype=float)
        self.log_prior = np.log(prev / prev.sum())
        self._age = np.array([c.age for c in self.conditions], dtype=float)
        self._female = np.array([c.female for c in self.conditions], dtype=float)

    @property
    def condition_ids(self) -> list[str]:
        return [c.id for c in self.conditions]

    @property
    def systems(self) -> list[str]:
        return sorted({c.system for c in self.conditions})

    def condition(self, cond_id: str) -> Condition:
        return self.conditions[self.cond_index[cond_id]]

    def probs(self, background_rate: float = BACKGROUND_RATE) -> np.ndarray:
        """``(C, E)`` P(e present | c). An evidence c does not list takes its
        vocabulary ``base`` rate (population prevalence) or else ``background_rate``."""
        key = ("p", background_rate)
        if key not in self._cache:
            fill = np.array([background_rate if e.base is None else e.base for e in self.evidences.values()])
            self._cache[key] = np.where(np.isnan(self.likelihood), fill[None, :], self.likelihood)
        return self._cache[key]

    def log_tables(self, background_rate: float = BACKGROUND_RATE) -> tuple[np.ndarray, np.ndarray]:
        """``(C, E)`` log P(e | c) and log P(not e | c), clipped to [1e-3, 1 - 1e-3]."""
        key = ("log", background_rate)
        if key not in self._cache:
            p = np.clip(self.probs(background_rate), _EPS, 1 - _EPS)
            self._cache[key] = (np.log(p), np.log1p(-p))
        return self._cache[key]

    def log_demographics(self, age: float | None, sex: str | None) -> np.ndarray:
        """``(C,)`` log p(age | c) + log P(sex | c).

        ``age`` is in completed years (an integer age covers [age, age + 1)),
        so the triangular density is read at ``age + 0.5``, the middle of that
        year; otherwise a patient sampled just above a condition's minimum age
        would get density 0 at the minimum itself. Densities are floored at
        1e-6 per year: an age outside a condition's range makes it very
        unlikely, never impossible.
        """
        out = np.zeros(len(self.conditions))
        if age is not None:
            x = float(age) + 0.5
            lo, mode, hi = self._age.T
            left = np.where(mode > lo, 2 * (x - lo) / ((hi - lo) * np.maximum(mode - lo, 1e-12)), 2 / (hi - lo))
            right = np.where(hi > mode, 2 * (hi - x) / ((hi - lo) * np.maximum(hi - mode, 1e-12)), 2 / (hi - lo))
            pdf = np.where(x < mode, left, right)
            pdf = np.where((x < lo) | (x > hi), 0.0, pdf)
            out += np.log(np.maximum(pdf, 1e-6))
        if sex is not None:
            if sex not in ("female", "male"):
                raise ValueError(f"sex must be 'female' or 'male', got {sex!r}")
            f = self._female if sex == "female" else 1 - self._female
            out += np.log(np.clip(f, 1e-6, 1.0))
        return out

    @property
    def questions(self) -> dict[str, Question]:
        """Askable questions (symptoms and history), keyed by question id, in vocabulary order.

        A question is an evidence's ``group`` (DDXPlus: the evidence code whose answer values
        are separate evidences) or else the evidence itself; its label is the id in words
        (``chest_pain`` -> ``chest pain``) unless ``labels`` names it."""
        if "questions" not in self._cache:
            groups: dict[str, list[Evidence]] = {}
            for e in self.evidences.values():
                if e.type in ("symptom", "history"):
                    groups.setdefault(e.group or e.id, []).append(e)
            labels = self.labels
            out = {}
            for qid, evs in groups.items():
                first = evs[0]
                text = first.question.split(" - ")[0] if first.group else first.question
                sexes = {e.sex for e in evs}
                out[qid] = Question(qid, labels.get(qid, qid.replace("_", " ")), text, tuple(e.id for e in evs),
                                    first.type, sexes.pop() if len(sexes) == 1 else None, first.parent)
            self._cache["questions"] = out
        return self._cache["questions"]

    def question_of(self, evidence_id: str) -> str:
        """The id of the question whose answer reveals ``evidence_id``."""
        ev = self.evidences[evidence_id]
        return ev.group or ev.id

    def index(self, evidence_ids: Iterable[str]) -> np.ndarray:
        try:
            return np.array([self.ev_index[e] for e in evidence_ids], dtype=int)
        except KeyError as e:
            raise ValueError(f"unknown evidence id {e.args[0]!r} (not in {self.root / 'evidences.yaml'})") from None


def log_posterior(kb: KnowledgeBase, evidences_present: Iterable[str] = (), evidences_absent: Iterable[str] = (),
                  age: float | None = None, sex: str | None = None, *,
                  background_rate: float = BACKGROUND_RATE) -> np.ndarray:
    """``(C,)`` normalised log P(c | evidence) in ``kb.conditions`` order (see :func:`posterior`)."""
    return log_posterior_indexed(kb, kb.index(evidences_present), kb.index(evidences_absent), age, sex,
                                 background_rate=background_rate)


def log_posterior_indexed(kb: KnowledgeBase, pres: np.ndarray, absn: np.ndarray, age: float | None = None,
                          sex: str | None = None, *, background_rate: float = BACKGROUND_RATE) -> np.ndarray:
    """:func:`log_posterior` with evidences given as column indices into ``kb.ev_ids``."""
    logp_yes, logp_no = kb.log_tables(background_rate)
    lp = kb.log_prior + kb.log_demographics(age, sex)
    if pres.size:
        lp = lp + logp_yes[:, pres].sum(axis=1)
    if absn.size:
        lp = lp + logp_no[:, absn].sum(axis=1)
    # log-sum-exp normalisation: with 100+ observed evidences the raw joint is
    # far below float64's smallest normal number, so never exponentiate first.
    m = lp.max()
    return lp - (m + math.log(np.exp(lp - m).sum()))


def posterior(kb: KnowledgeBase, evidences_present: Iterable[str] = (), evidences_absent: Iterable[str] = (),
              age: float | None = None, sex: str | None = None, *,
              background_rate: float = BACKGROUND_RATE) -> dict[str, float]:
    """Naive-Bayes P(condition | evidences, age, sex) over the whole knowledge base.

    Args:
        kb: from :func:`load_knowledge_base`.
        evidences_present: evidence ids known to be present.
        evidences_absent: evidence ids known to be absent. Ids in neither are unobserved.
        age: years, or None to ignore age. sex: "female" / "male" / None.
        background_rate: P(e | c) for evidences c does not list; must match the generator's.

    Returns:
        ``{condition_id: probability}`` summing to 1, in knowledge-base order.
        Computed in log space, so it stays finite however many evidences are given.
    """
    lp = log_posterior(kb, evidences_present, evidences_absent, age, sex, background_rate=background_rate)
    return dict(zip(kb.condition_ids, np.exp(lp).tolist()))


# --------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path):
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise KnowledgeBaseError(path, "file not found") from None
    except yaml.YAMLError as e:
        raise KnowledgeBaseError(path, f"invalid YAML ({e})".replace("\n", " ")) from None


def _load_vocabulary(path: Path) -> tuple[dict[str, Evidence], dict[str, Test]]:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise KnowledgeBaseError(path, "must hold a mapping with 'tests' and evidence sections")
    known = {"tests", "symptoms", "antecedents", "exam", "lab", "imaging"}
    if set(data) - known:
        raise KnowledgeBaseError(path, f"unknown section(s) {sorted(set(data) - known)}; known: {sorted(known)}")
    tests: dict[str, Test] = {}
    for tid, t in (data.get("tests") or {}).items():
        if not isinstance(t, dict) or t.get("kind") not in ("exam", "lab", "imaging") or not t.get("name"):
            raise KnowledgeBaseError(path, f"test '{tid}' needs name and kind exam|lab|imaging")
        tests[tid] = Test(tid, t["name"], t["kind"], t.get("normal", "normal"))
    evidences: dict[str, Evidence] = {}
    for section, etype in SECTIONS.items():
        for eid, e in (data.get(section) or {}).items():
            where = f"evidence '{eid}' ({section})"
            if eid in evidences:
                raise KnowledgeBaseError(path, f"duplicate evidence id '{eid}' (also under {evidences[eid].type})")
            if not isinstance(e, dict):
                raise KnowledgeBaseError(path, f"{where} must be a mapping")
            sex = e.get("sex")
            base = e.get("base")
            if base is not None and not _is_prob(base):
                raise KnowledgeBaseError(path, f"{where}: base = {base!r} is not a probability in [0, 1]")
            if sex not in (None, "female", "male"):
                raise KnowledgeBaseError(path, f"{where}: sex must be female or male, got {sex!r}")
            if etype in ("symptom", "history"):
                if not e.get("q"):
                    raise KnowledgeBaseError(path, f"{where} needs a lay question 'q'")
                if etype == "symptom" and (not e.get("say") or not isinstance(e.get("salience"), int)):
                    raise KnowledgeBaseError(path, f"{where} needs 'say' (lay phrase) and integer 'salience'")
                evidences[eid] = Evidence(eid, etype, question=e["q"], say=e.get("say", ""),
                                          salience=e.get("salience", 0), sex=sex, base=base)
            else:
                t = tests.get(e.get("test"))
                if t is None:
                    raise KnowledgeBaseError(path, f"{where}: unknown test {e.get('test')!r}")
                if t.kind != etype:
                    raise KnowledgeBaseError(path, f"{where}: test '{t.id}' is a {t.kind} test, not {etype}")
                if not e.get("finding"):
                    raise KnowledgeBaseError(path, f"{where} needs a 'finding' text")
                evidences[eid] = Evidence(eid, etype, test=t.id, finding=e["finding"], sex=sex, base=base)
    return evidences, tests


def _is_prob(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and 0.0 <= x <= 1.0


def _parse_condition(raw, path: Path, default_system: str | None, evidences: dict[str, Evidence],
                     tests: dict[str, Test], pos: int) -> Condition:
    if not isinstance(raw, dict):
        raise KnowledgeBaseError(path, f"condition #{pos + 1} must be a mapping")
    cid = raw.get("id")
    if not isinstance(cid, str) or not re.fullmatch(r"[a-z0-9_]+", cid or ""):
        raise KnowledgeBaseError(path, f"condition #{pos + 1}: id must be snake_case text, got {cid!r}")

    def fail(problem: str):
        raise KnowledgeBaseError(path, f"condition '{cid}': {problem}")

    if set(raw) - _CONDITION_KEYS:
        fail(f"unknown key(s) {sorted(set(raw) - _CONDITION_KEYS)}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        fail(f"missing key(s) {missing}")
    if not isinstance(raw["icd10"], str) or not _ICD10.match(raw["icd10"]):
        fail(f"icd10 {raw['icd10']!r} is not an ICD-10 code like I21.3")
    system = raw.get("system", default_system)
    if system not in SYSTEMS:
        fail(f"system {system!r} is not one of {list(SYSTEMS)}")
    prev = raw["prevalence"]
    if not isinstance(prev, (int, float)) or isinstance(prev, bool) or not (prev > 0 and math.isfinite(prev)):
        fail(f"prevalence {prev!r} must be a positive number")
    if raw["urgency"] not in URGENCY:
        fail(f"urgency {raw['urgency']!r} must be one of {list(URGENCY)}")
    demo = raw["demographics"]
    if not isinstance(demo, dict) or set(demo) != {"age", "female"}:
        fail("demographics must be {age: [min, mode, max], female: P(female)}")
    age = demo["age"]
    if (not isinstance(age, list) or len(age) != 3 or not all(isinstance(a, (int, float)) for a in age)
            or not (0 <= age[0] <= age[1] <= age[2] <= 110) or age[0] == age[2]):
        fail(f"demographics.age {age!r} must be [min, mode, max] years with min <= mode <= max, min < max")
    if not _is_prob(demo["female"]):
        fail(f"demographics.female = {demo['female']!r} is not a probability in [0, 1]")

    likelihoods: dict[str, float] = {}
    for section, etype in SECTIONS.items():
        table = raw.get(section) or {}
        if not isinstance(table, dict):
            fail(f"{section} must map evidence id -> probability")
        for eid, p in table.items():
            ev = evidences.get(eid)
            if ev is None:
                fail(f"{section}: unknown evidence id '{eid}' (not in evidences.yaml)")
            if ev.type != etype:
                fail(f"{section}: '{eid}' is a {ev.type} evidence; list it under "
                     f"{next(s for s, t in SECTIONS.items() if t == ev.type)}")
            if not _is_prob(p):
                fail(f"{section}.{eid} = {p!r} is not a probability in [0, 1]")
            if eid in likelihoods:
                fail(f"evidence '{eid}' listed twice")
            likelihoods[eid] = float(p)
    if not any(evidences[e].type == "symptom" and p > 0 for e, p in likelihoods.items()):
        fail("needs at least one symptom with probability > 0 (a case needs a chief complaint)")
    for rf in raw["red_flags"] or []:
        if rf not in likelihoods:
            fail(f"red flag '{rf}' is not one of this condition's evidences")
    for t in raw["tests"] or []:
        if t not in tests:
            fail(f"tests: unknown test '{t}' (not in evidences.yaml tests)")
    return Condition(cid, str(raw["name"]), raw["icd10"], system, float(prev), raw["urgency"],
                     (float(age[0]), float(age[1]), float(age[2])), float(demo["female"]), likelihoods,
                     tuple(raw["red_flags"] or ()), tuple(raw["tests"] or ()), str(path))


def load_knowledge_base(root: str | Path | None = None, *, min_conditions: int = MIN_CONDITIONS) -> KnowledgeBase:
    """Load and validate a knowledge-base folder (``evidences.yaml`` + ``conditions/*.yaml``).

    ``root=None`` loads the packaged one (cached). Raises :class:`KnowledgeBaseError`
    naming the file and condition on any schema problem: unknown evidence id,
    probability outside [0, 1], duplicate ids, or fewer than ``min_conditions``.
    """
    if root is None and min_conditions == MIN_CONDITIONS:
        return _packaged()
    return _load(Path(root) if root is not None else DATA_DIR, min_conditions)


@functools.lru_cache(maxsize=1)
def _packaged() -> KnowledgeBase:
    return _load(DATA_DIR, MIN_CONDITIONS)


def _load(root: Path, min_conditions: int) -> KnowledgeBase:
    vocab_path = root / "evidences.yaml"
    evidences, tests = _load_vocabulary(vocab_path)
    files = sorted((root / "conditions").glob("*.yaml"))
    single = root / "conditions.yaml"  # a one-file knowledge base is allowed too
    if single.exists():
        files.insert(0, single)
    if not files:
        raise KnowledgeBaseError(root, "no condition files (conditions/*.yaml or conditions.yaml)")
    digest = hashlib.sha256(vocab_path.read_bytes())
    conditions: list[Condition] = []
    seen: dict[str, Path] = {}
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
        data = _read_yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("conditions"), list):
            raise KnowledgeBaseError(path, "must hold a mapping with a 'conditions' list")
        if set(data) - {"system", "conditions"}:
            raise KnowledgeBaseError(path, f"unknown top-level key(s) {sorted(set(data) - {'system', 'conditions'})}")
        for pos, raw in enumerate(data["conditions"]):
            c = _parse_condition(raw, path, data.get("system"), evidences, tests, pos)
            if c.id in seen:
                raise KnowledgeBaseError(path, f"condition '{c.id}': duplicate condition id (first defined in {seen[c.id]})")
            seen[c.id] = path
            conditions.append(c)
    if len(conditions) < min_conditions:
        raise KnowledgeBaseError(root, f"only {len(conditions)} conditions; the knowledge base needs at least {min_conditions}")
    return KnowledgeBase(evidences, tests, conditions, root, digest.hexdigest())
