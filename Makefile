# kwlab: two commands on a fresh machine -- `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
DATA   ?=
FULL   ?=
STAMP  := $(VENV)/.installed

.PHONY: install demo test lab gallery bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so that no other build is ever resolved.
$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo runs kwlab's positive control (data: cued, made offline); `make demo DATA=...` asks the same
# question on other data (cifar10, auto, synthetic).
demo: $(STAMP)
	$(PY) -m kwlab sweep configs/demo.yaml --out runs/demo $(if $(DATA),--set data=$(DATA))

test: $(STAMP)
	$(PY) -m ruff check kwlab tests benchmarks
	$(PY) -m pytest -q tests

# Notebooks open in quick mode (KWLAB_QUICK=1: minutes on a CPU); `make lab FULL=1` runs them in full.
# As root (containers, lab machines) Jupyter needs --allow-root; it is passed only then.
LAB_UID ?= $(shell id -u)
# Widget state is saved with the notebook (a reopened notebook shows its sliders, not "Error displaying
# widget"): the setting goes into the venv's JupyterLab overrides.
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_OVERRIDES): $(STAMP)
	mkdir -p $(dir $@)
	printf '%s\n' '{"@jupyter-widgets/jupyterlab-manager:plugin": {"saveState": true}}' > $@

lab: $(STAMP) $(LAB_OVERRIDES)
	KWLAB_QUICK=$(if $(FULL),0,1) $(VENV)/bin/jupyter lab $(if $(filter 0,$(LAB_UID)),--allow-root )notebooks/

# The notebooks executed in quick mode, as HTML a teacher can read before running anything:
# gallery/index.html links one page per notebook (outputs and widget state included).
gallery: $(STAMP)
	KWLAB_QUICK=1 $(PY) -m kwlab.gallery notebooks gallery

bench: $(STAMP)
	$(PY) benchmarks/bench_speed.py

clean:
	rm -rf $(VENV) runs gallery
