# The two entry points of the README. Each creates .venv (pinned torch/torchvision from pip) if missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## run chromoseg on the shipped example metaphase
	$(VENV)/bin/chromoseg demo --out out/demo

test: $(STAMP)  ## the whole test suite
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)  ## the ops benchmarks (not part of the tests)
	$(VENV)/bin/python benchmarks/bench_ops.py

clean-venv:
	rm -rf $(VENV)
