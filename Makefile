# The two commands a newcomer types on a fresh clone (see README.md):
#   make demo   - set up .venv (CPU torch, no CUDA packages) and run the main job
#   make test   - set up .venv and run the test suite, offline
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints/cpu.txt -e '.[dev]'
	touch $@

demo: setup
	$(PY) -m parrot.train

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: setup
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

clean:
	rm -rf $(VENV) runs .pytest_cache
