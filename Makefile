# kwlab: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DATA   ?= synthetic
STAMP  := $(VENV)/.installed

.PHONY: install demo test lab bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so that no other build is ever resolved.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m kwlab sweep configs/demo.yaml --out runs/demo --set data=$(DATA)

test: $(STAMP)
	$(PY) -m ruff check kwlab tests benchmarks
	$(PY) -m pytest -q tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

bench: $(STAMP)
	$(PY) benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) runs
