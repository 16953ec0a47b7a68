# Two entry points for a fresh machine: `make demo` and `make test`. Each creates the virtual
# environment it needs. TORCH pins the PyTorch build (override for another platform).
VENV ?= .venv
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH)" -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/solulab demo

test: $(STAMP)
	$(VENV)/bin/ruff check solulab tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest
