"""Diagnostic dialogue: environment, simulated patients, multi-turn RL, evaluation.

Kept import-light (no torch at import) because `medkit.cli` imports
`medkit.dialogue.cli` to build the `medkit dialogue` command group.

Modules (import them directly):

- ``actions``: the doctor's one-line action format (ASK / EXAM / DIAGNOSIS) and its parser.
- ``grammar``: the legal actions of a case's knowledge base as a token grammar (constrained decoding).
- ``env``: :class:`~medkit.dialogue.env.DialogueEnv`, one case + one simulated patient.
- ``patient``: SAGE-style persona patient (rule-based, grounded in the case), LLM voice,
  generic control simulator (same facts, no persona), diagnosis-name filter.
- ``oracle``: expected-information-gain doctor over the knowledge base (demonstrations).
- ``policy``: LM doctors (the dialogue as a token stream, :class:`ConstrainedDoctor`, save / load).
- ``sft``: fine-tuning on oracle dialogues with the teacher-forced agreement curve.
- ``episodes`` / ``grpo`` / ``srppo``: sampled episodes, multi-turn GRPO (WebAgent-R1), Self-Rewarding PPO.
- ``train`` (+ ``train_config``, ``data``, ``stages``): the `medkit dialogue train` pipeline.
- ``evaluate``: :func:`~medkit.dialogue.evaluate.evaluate` (`medkit dialogue eval`, a run folder),
  error discovery. ``sage``: planted faults and how often each simulator exposes them.
- ``judge``: judge-scored rubric (history taking, safety): rule-based default, LLM judge option.
- ``hallucination``: doctor turns that presuppose / cite facts the dialogue never established.
- ``readers``: DDXPlus (defaults as absent evidence, multi-choice questions) and MedQA from local folders.
- ``chat``: terminal play.
"""
