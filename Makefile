# The two entry points of the README. Each creates .venv (pinned torch/torchvision from pip) if missing.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean-venv chromium

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)  ## run chromoseg on the shipped example metaphase
	$(VENV)/bin/chromoseg demo --out out/demo

test: $(STAMP) chromium  ## the whole test suite
	$(VENV)/bin/python -m pytest -q

chromium:  ## Debian's chromium for tests/test_review_browser.py, which is skipped (saying why) when it cannot be installed
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
	  && echo "installed chromium for the browser test"; } \
	  || echo "chromium could not be installed: tests/test_review_browser.py will be skipped"

bench: $(STAMP)  ## the ops benchmarks (not part of the tests)
	$(VENV)/bin/python benchmarks/bench_ops.py

clean-venv:
	rm -rf $(VENV)
