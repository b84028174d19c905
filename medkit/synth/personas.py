"""Simulated-patient personas for :mod:`medkit.synth.cases`.

A persona tells a simulated patient *how* to talk (the case says *what* is
true). Traits are sampled, then the categorical fields are derived from them
so they hang together: anxiety rises with Big Five neuroticism and with the
condition's urgency; verbosity follows extraversion. Children under 12 are
represented by a parent (``informant = "parent"``), as in a real consultation.
"""

from __future__ import annotations

import numpy as np

LITERACY = ("low", "medium", "high")
ANXIETY = ("low", "medium", "high")
VERBOSITY = ("terse", "normal", "rambling")
BIG_FIVE = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
_URGENCY_SHIFT = {"routine": 0.0, "urgent": 0.1, "emergency": 0.2}

# Occupations by age band (years, inclusive lower bound). Plain, common jobs.
_OCCUPATIONS = (
    (0, ("child",)),
    (5, ("school pupil",)),
    (16, ("student", "shop assistant", "apprentice electrician", "barista", "warehouse worker")),
    (23, ("nurse", "software developer", "bus driver", "teacher", "builder", "accountant", "cleaner",
          "chef", "hairdresser", "call-centre agent", "farmer", "police officer", "lorry driver",
          "care worker", "office manager", "unemployed", "full-time parent")),
    (67, ("retired teacher", "retired factory worker", "retired nurse", "retired engineer",
          "retired shopkeeper", "retired civil servant")),
)

_LITERACY_STYLE = {
    "low": "uses everyday words, may misname body parts and medicines, is unsure about medical terms",
    "medium": "describes symptoms clearly in plain language and knows common medical words",
    "high": "uses precise terms, may quote test results or things read online",
}
_ANXIETY_STYLE = {
    "low": "calm and matter-of-fact, tends to play symptoms down",
    "medium": "somewhat worried, asks what the problem might be",
    "high": "very worried, keeps returning to fears of something serious and asks for reassurance",
}
_VERBOSITY_STYLE = {
    "terse": "answers in a few words and volunteers nothing unasked",
    "normal": "answers the question asked with a little context",
    "rambling": "gives long answers with stories and side details before getting to the point",
}


def _occupation(age: int, rng: np.random.Generator) -> str:
    options = next(opts for lo, opts in reversed(_OCCUPATIONS) if age >= lo)
    return str(options[int(rng.integers(len(options)))])


def _level(score: float, names: tuple[str, str, str], lo: float = 0.35, hi: float = 0.65) -> str:
    return names[0] if score < lo else names[2] if score > hi else names[1]


def sample_persona(age: int, sex: str, urgency: str, rng: np.random.Generator) -> dict:
    """One persona as a JSON-ready dict.

    Big Five scores are Beta(2, 2) draws in [0, 1] (mean 0.5, sd 0.22): most
    people are middling on each trait. Anxiety = neuroticism + an urgency shift
    (an emergency frightens anyone) + N(0, 0.1) noise, cut at 0.35 / 0.65.
    Verbosity = extraversion + N(0, 0.1), same cuts. Health literacy is drawn
    30 / 45 / 25 % low / medium / high (roughly the spread reported in adult
    health-literacy surveys).
    """
    traits = {k: round(float(rng.beta(2.0, 2.0)), 2) for k in BIG_FIVE}
    literacy = LITERACY[int(rng.choice(3, p=[0.3, 0.45, 0.25]))]
    anxiety = _level(traits["neuroticism"] + _URGENCY_SHIFT[urgency] + rng.normal(0, 0.1), ANXIETY)
    verbosity = _level(traits["extraversion"] + rng.normal(0, 0.1), VERBOSITY)
    informant = "parent" if age < 12 else "self"
    style = f"{_LITERACY_STYLE[literacy]}; {_ANXIETY_STYLE[anxiety]}; {_VERBOSITY_STYLE[verbosity]}"
    if informant == "parent":
        style = f"a parent speaking for their child: {style}"
    return {
        "age": int(age),
        "sex": sex,
        "informant": informant,
        "health_literacy": literacy,
        "anxiety": anxiety,
        "verbosity": verbosity,
        "big_five": traits,
        "occupation": _occupation(age, rng),
        "speaking_style": style,
    }
