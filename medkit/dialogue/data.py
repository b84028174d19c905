"""Cases, oracle demonstrations and the tiny model's vocabulary for `medkit dialogue train`."""

from __future__ import annotations

from ..config import ConfigError
from .oracle import OracleDoctor
from .train_config import DataConfig


def load_cases(cfg: DataConfig):
    """``(kb, train_cases, eval_cases)``: synth cases split by their ``split`` field, or DDXPlus files."""
    if cfg.source == "ddxplus":
        from .readers import ddxplus_knowledge_base, read_ddxplus_cases

        kb = ddxplus_knowledge_base(cfg.root)
        train = read_ddxplus_cases(cfg.root, "train", kb, limit=cfg.n_train + cfg.n_rl, seed=cfg.seed)
        test = read_ddxplus_cases(cfg.root, "test", kb, limit=cfg.n_eval, seed=cfg.seed)
        return kb, train, test
    from ..synth.cases import CasesConfig, generate_cases
    from ..synth.knowledge import load_knowledge_base

    kb = load_knowledge_base()
    cases = generate_cases(CasesConfig(n_cases=cfg.pool, seed=cfg.seed), kb)
    train = [c for c in cases if c["split"] == "train"]
    test = [c for c in cases if c["split"] == "test"]
    if len(train) < cfg.n_train + cfg.n_rl or len(test) < cfg.n_eval:
        raise ConfigError(f"data.pool = {cfg.pool} gives {len(train)} train / {len(test)} test cases; "
                          f"need {cfg.n_train + cfg.n_rl} / {cfg.n_eval}")
    return kb, train[: cfg.n_train + cfg.n_rl], test[: cfg.n_eval]


def demonstrations(cases, kb, oracle: OracleDoctor, *, max_turns: int, patient: str = "persona"):
    """Oracle dialogues: ``(turn_rows, episode_records)``; a turn row holds the chat messages
    before the doctor's turn and the oracle's action."""
    from .policy import messages
    from .rollout import make_envs

    rows, recs = [], []
    for env in make_envs(cases, kb, patient=patient, max_turns=max_turns):
        while not env.done:
            msgs = messages(env)
            action = oracle.act(env)
            rows.append({"case_id": env.case["case_id"], "turn": env.turns + 1, "messages": msgs, "action": action})
            env.step(action)
        recs.append(env.record())
    return rows, recs


def vocabulary(kb, turn_rows, cases) -> list[str]:
    """Word vocabulary for the tiny model: knowledge-base phrases + demonstration text + the
    generic patient's and the environment's phrases."""
    from .actions import FORMAT_REMINDER
    from .patient import NOT_UNDERSTOOD
    from .policy import build_vocab, kb_texts

    texts = kb_texts(kb) + [FORMAT_REMINDER, NOT_UNDERSTOOD, "[end] Turn limit reached without a diagnosis.",
                            "[exam] Unknown test. Order a test by its name, e.g. 'EXAM: Chest X-ray'.",
                            "I don't really know what that means, sorry. Is that bad? male female year old"]
    for r in turn_rows:
        texts += [m["content"] for m in r["messages"]] + [r["action"]]
    _, generic = demonstrations(cases[:50], kb, OracleDoctor(kb), max_turns=10, patient="generic")
    texts += [t["text"] for rec in generic for t in rec["transcript"]]
    return build_vocab(texts)


# --------------------------------------------------------------------------- stages
