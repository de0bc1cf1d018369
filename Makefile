# Two entry points: `make lab` (the workbench in JupyterLab) and `make test` (every test).
# Both build .venv on first use; python3 must be 3.10 or newer.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Jupyter refuses to start as root unless told; containers and CI machines often run as root.
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test bench samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[export,lab,test,bench,cluster]"
	touch $(STAMP)

# Serves the repository root (sample_models/ can be browsed) with notebook 01 open, and prints its direct link.
lab: $(STAMP)
	$(PY) -m workbench.ui.lab $(LAB_FLAGS)

test: $(STAMP)
	tools/ensure-chromium
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/run.py

samples: $(STAMP)
	$(PY) sample_models/build.py --minilm

clean:
	rm -rf $(VENV) .pytest_cache sample_models/generated
