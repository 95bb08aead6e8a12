# The two commands of the README: `make demo` (set up, train shakespeare-fast, print a sample)
# and `make test` (set up, run the whole test suite). Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
TORCH_VERSION := 2.13.0
RUN_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# --system-site-packages keeps a torch that is already installed (a CUDA build, say); only
# where none is importable do we install the CPU-friendly pinned release.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: setup
	$(VENV)/bin/tinygpt train --preset shakespeare-fast --out $(RUN_DIR)
	$(VENV)/bin/tinygpt sample $(RUN_DIR) --max-new-tokens 300

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
