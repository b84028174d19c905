"""Diagnostic dialogue: environment, simulated patients, multi-turn RL, evaluation.

Kept import-light (no torch at import) because `medkit.cli` imports
`medkit.dialogue.cli` to build the `medkit dialogue` command group.
"""
