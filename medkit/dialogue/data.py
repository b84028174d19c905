"""Cases, oracle demonstrations and the tiny model's vocabulary for `medkit dialogue train`."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError
from .oracle import OracleDoctor
from .train_config import DataConfig


def load_split(cfg: DataConfig, split: str, n: int | None, *, offset: int = 0, kb=None):
    """``(kb, cases)``: ``n`` cases of ``split`` (``train`` / ``validate`` / ``test``; DDXPlus: None =
    every row), from row ``offset`` on. Synthetic cases use their ``split`` field (``validate`` is ``val``); DDXPlus
    cases its ``release_{split}_patients`` file, with the knowledge base counted on its training
    patients (``data.kb_split``)."""
    if cfg.source == "ddxplus":
        from .readers import ddxplus_knowledge_base, read_ddxplus_cases

        kb = kb or ddxplus_knowledge_base(cfg.root, split=cfg.kb_split)
        return kb, read_ddxplus_cases(cfg.root, split, kb, limit=n, offset=offset, seed=cfg.seed)
    from ..synth.cases import CasesConfig, generate_cases
    from ..synth.knowledge import load_knowledge_base

    kb = kb or load_knowledge_base()
    if n is None:
        raise ConfigError("synthetic cases need a count")
    want = {"train": "train", "validate": "val", "val": "val", "test": "test"}[split]
    cases = [c for c in generate_cases(CasesConfig(n_cases=cfg.pool, seed=cfg.seed), kb) if c["split"] == want]
    if len(cases) < offset + n:
        raise ConfigError(f"data.pool = {cfg.pool} gives {len(cases)} synthetic {want} cases; need {offset + n}")
    return kb, cases[offset: offset + n]


@dataclass
class Part:
    """One data source of a training run: its knowledge base, demonstration cases, RL cases and
    held-out cases (of ``data.eval_split``)."""

    name: str
    kb: object
    demo: list
    rl: list
    held_out: list


def load_parts(cfg: DataConfig) -> list[Part]:
    """The run's sources: ``synth``, ``ddxplus`` or both (one doctor for both knowledge bases)."""
    from dataclasses import replace

    names = ["synth", "ddxplus"] if cfg.source == "both" else [cfg.source]
    out = []
    for name in names:
        c = replace(cfg, source=name)
        kb, train = load_split(c, cfg.train_split, cfg.n_train + cfg.n_rl)
        _, held = load_split(c, cfg.eval_split, cfg.n_eval, kb=kb)
        out.append(Part(name, kb, train[: cfg.n_train], train[cfg.n_train:], held))
    return out


def load_cases(cfg: DataConfig):
    """``(kb, train_cases, eval_cases)`` of a single-source config (see :func:`load_parts`)."""
    if cfg.source == "both":
        raise ConfigError("load_cases needs one source; use load_parts for data.source = both")
    p = load_parts(cfg)[0]
    return p.kb, p.demo + p.rl, p.held_out


def demonstrations(cases, kb, oracle: OracleDoctor, *, max_turns: int, patient: str = "persona"):
    """Oracle dialogues: ``(dialogue_rows, episode_records)``; a dialogue row holds the case id and
    the oracle's actions in order (canonical text: no confidence, no rationale)."""
    from .rollout import make_envs

    rows, recs = [], []
    for env in make_envs(cases, kb, patient=patient, max_turns=max_turns):
        actions = []
        while not env.done:
            action = oracle.act(env)
            actions.append(action)
            env.step(action)
        rows.append({"case_id": env.case["case_id"], "actions": actions})
        recs.append(env.record())
    return rows, recs


def vocabulary(kbs, dialogue_recs) -> list[str]:
    """Word vocabulary for the tiny model: the phrases of the knowledge bases ``kbs`` (one or a
    list) + the demonstrations' text + the patients' and the environment's phrases."""
    from .actions import FORMAT_REMINDER
    from .patient import NOT_UNDERSTOOD
    from .policy import build_vocab, kb_texts

    texts = [t for kb in (kbs if isinstance(kbs, list) else [kbs]) for t in kb_texts(kb)] + [FORMAT_REMINDER, NOT_UNDERSTOOD, "[end] Turn limit reached without a diagnosis.",
                            "I don't really know what that means, sorry. Is that bad? male female year old",
                            "Yes: No, none. Yes, I think that's all. No, nothing like that at all.",
                            "I've come in because of I've also had, if that matters. I'm really worried it's "
                            "something serious. it's been bothering me a lot. now that you ask. not that I've "
                            "noticed, and I would have noticed. I don't think so."]
    for rec in dialogue_recs:
        texts += [t["text"] for t in rec["transcript"]]
    return build_vocab(texts)
