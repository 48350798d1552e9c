# The README's two commands: `make demo` (fine-tune on the embedded default) and
# `make test`. Both build the virtualenv they need first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/demo

.PHONY: demo test install clean

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python experiments/finetune.py --config=experiments/configs/default.py --workdir=$(WORKDIR)

test: install
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) runs
