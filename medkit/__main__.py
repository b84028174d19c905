"""``python -m medkit``: the same command line as ``medkit``."""

from .cli import app

if __name__ == "__main__":  # pragma: no cover - exercised by tests/test_pipelines.py in a subprocess
    app(prog_name="medkit")
