"""Diagnostic dialogue: environment, simulated patients, multi-turn RL, evaluation.

Kept import-light (no torch at import) because `medkit.cli` imports
`medkit.dialogue.cli` to build the `medkit dialogue` command group.

Modules (import them directly):

- ``actions``: the doctor's one-line action format (ASK / EXAM / DIAGNOSIS) and its parser.
- ``env``: :class:`~medkit.dialogue.env.DialogueEnv`, one case + one simulated patient.
- ``patient``: SAGE-style persona patient (rule-based, grounded in the case), LLM voice,
  generic control simulator, diagnosis-name filter.
- ``oracle``: expected-information-gain doctor over the knowledge base (demonstrations).
- ``policy``: LM doctors (prompts, word tokeniser for the tiny LM, save / load stages).
- ``rollout``: batched multi-episode play. ``grpo``: multi-turn GRPO (WebAgent-R1).
- ``train``: the `medkit dialogue train` pipeline (demos -> SFT -> SR-PPO / GRPO -> eval).
- ``evaluate``: accuracy with bootstrap CIs, SAGE error discovery. ``chat``: terminal play.
- ``judge``: judge-scored rubric (history taking, safety): rule-based default, LLM judge option.
- ``hallucination``: doctor turns that presuppose / cite facts the dialogue never established.
- ``readers``: DDXPlus and MedQA from local folders.
"""
