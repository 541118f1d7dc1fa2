# The README's two commands: `make demo` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: demo test lint test-python test-notebooks test-other-pythons bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -U pip
	$(PIP) install -e '.[test,jupyter,dill]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) notebooks/run_notebook.py notebooks/00-tour.ipynb

lint: $(VENV)/.installed
	$(PY) -m ruff check nbproc tests benchmarks notebooks
	$(PY) -m ruff format --check nbproc tests benchmarks

test-python: $(VENV)/.installed
	$(PY) -m pytest tests

test-notebooks: $(VENV)/.installed
	$(PY) -m pytest --nbval notebooks -p no:randomly --nbval-sanitize-with notebooks/nbval-sanitize.cfg

test-other-pythons:
	bash tests/other_pythons.sh

docs: $(VENV)/.installed
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

test: lint test-python test-notebooks test-other-pythons

bench: $(VENV)/.installed
	$(PIP) install multiprocess loky
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .venv-* .pytest_cache docs/_build
