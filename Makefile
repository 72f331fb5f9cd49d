# One-command set-up: every target creates .venv if missing and installs the pinned versions.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo docs notebooks lint bench mutation clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m pytest
	$(MAKE) docs

# API reference from the docstrings (math rendered) into docs/api/index.html, the user guide (docs/guide/*.md,
# README.md) into docs/api/guide/; every relative link and image checked first; warnings are errors
docs: $(STAMP)
	rm -rf docs/api
	$(PY) -W error docs/build.py docs/api

# The example notebooks executed with their full budgets, outputs stored (examples/*.ipynb)
notebooks: $(STAMP)
	$(PY) examples/run_notebooks.py --render

demo: $(STAMP)
	$(VENV)/bin/physdiff demo --out demo-out

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples

# Mutation testing of the math, not part of `make test` (benchmarks/README.md): the hand-written
# formula mutants (~4 min), then mutmut's generated ones over the same modules (hours on 2 cores).
mutation: $(STAMP)
	$(PY) benchmarks/mutants.py
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[mutation]'
	mkdir -p mutants/src && PHYSDIFF_TEST_THREADS=1 OMP_NUM_THREADS=1 PYTHONPATH=$(CURDIR)/mutants/src \
		$(VENV)/bin/mutmut run --max-children 2
	$(VENV)/bin/mutmut results

bench: $(STAMP)
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) demo-out mutants docs/api
