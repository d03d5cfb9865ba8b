# The two commands a newcomer types on a fresh clone (see README.md):
#   make demo   - set up .venv (CPU torch, no CUDA packages) and run the main job
#   make test   - set up .venv and run the test suite, offline
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup chromium clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m parrot.train

# The report test renders its page in Debian's chromium: install it when missing and apt-get can
# (root, a Debian-family system); otherwise only say why, and that test skips.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "chromium: no apt-get here; install chromium by hand to run the report rendering test"; \
	  elif ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; \
	  then echo "chromium: apt-get could not install it (not root? offline?); the report rendering test will skip"; fi; }

# pytest exits 5 when it collects no test; that is not a failure of the suite.
# ruff (configured in pyproject.toml) checks the format and the lint rules before the tests run.
test: setup chromium
	$(PY) -m ruff format --check --quiet . || { echo "ruff format: run '$(PY) -m ruff format .'"; exit 1; }
	$(PY) -m ruff check --quiet .
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache
