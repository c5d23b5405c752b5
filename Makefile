# Both targets install everything they need into .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,onnx]'
	touch $(STAMP)

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/extract_throughput.py

clean:
	rm -rf out .pytest_cache
