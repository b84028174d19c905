"""Run batches of episodes: every active episode's doctor acts in one batched call per turn."""

from __future__ import annotations

from .env import DialogueEnv
from .patient import GenericPatient, LLMPatient, PersonaPatient


def make_patient(kind: str, case: dict, kb, lm=None):
    """``persona`` (rule-based SAGE patient), ``generic`` (control) or ``llm`` (needs ``lm=(model, tok)``)."""
    if kind == "persona":
        return PersonaPatient(case, kb)
    if kind == "generic":
        return GenericPatient(case, kb)
    if kind == "llm":
        if lm is None:
            raise ValueError("patient 'llm' needs a language model (lm=(model, tokenizer))")
        return LLMPatient(case, kb, lm)
    raise ValueError(f"patient must be persona / generic / llm, got {kind!r}")


def make_envs(cases, kb, *, patient: str = "persona", max_turns: int = 10, repeat: int = 1,
              background_rate: float = 0.01, lm=None) -> list[DialogueEnv]:
    """One environment per case (``repeat`` consecutive copies each, e.g. a GRPO group); ``env.uid`` = position."""
    envs = []
    for c in cases:
        for _ in range(repeat):
            e = DialogueEnv(c, make_patient(patient, c, kb, lm), kb, max_turns=max_turns,
                            background_rate=background_rate)
            e.uid = len(envs)
            envs.append(e)
    return envs


def run_episodes(envs, doctor, *, batch_size: int | None = None, progress=None) -> list[dict]:
    """Play every env to the end with ``doctor.act_batch``; returns ``env.record()`` rows in order.

    Episodes run in consecutive batches of ``batch_size`` (None: all at once), each batch to
    its end before the next starts, so a doctor that keeps a KV cache per batch
    (:class:`medkit.dialogue.policy.ConstrainedDoctor`) holds one batch in memory at a time.
    ``progress(done, total)`` is called after each batch."""
    bs = batch_size or max(len(envs), 1)
    for s in range(0, len(envs), bs):
        part = envs[s:s + bs]
        while True:
            active = [e for e in part if not e.done]
            if not active:
                break
            for e, text in zip(active, doctor.act_batch(active)):
                e.step(text)
        if hasattr(doctor, "reset") and not getattr(doctor, "record", False):
            doctor.reset()
        if progress:
            progress(min(s + bs, len(envs)), len(envs))
    return [e.record() for e in envs]
