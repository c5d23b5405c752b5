# Both targets install everything they need into .venv first (idempotent).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install browser demo test lint bench model clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,onnx,bench,browser,ray]'
	touch $(STAMP)

demo: install
	bash scripts/demo.sh

browser:
	bash scripts/install_browser.sh

test: install lint browser
	$(PY) -m pytest -q

# ruff and mypy are part of the test gate (configured in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check neardup tests bench scripts
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/extract_throughput.py

# retrain the bundled neardup_cd weights from their recipe (about an hour on 2 cores; not part of test)
model: install
	bash scripts/train_model.sh

clean:
	rm -rf out .pytest_cache
