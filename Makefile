# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
# .venv holds exactly requirements.lock (every transitive pin, runtime + dev, CPython 3.11 on linux x86_64);
# after changing a dependency in pyproject.toml, `make lock` regenerates the lock (commit both files).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
LOCK := requirements.lock
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.7.0
# lm-evaluation-harness (the parity test, bench/eval_throughput.py) in a venv of its own: its dependencies (scikit-learn,
# peft, accelerate, nltk...) are imported by torchmetrics when present and would add ~3 s to every Composer start in
# .venv. .venv-lmeval holds only what requirements-lmeval.lock adds to requirements.lock and reads .venv's packages
# through a .pth file (its own come first).
LMEVAL := lm-eval[hf]==0.4.13
LMEVAL_VENV := .venv-lmeval
LMEVAL_LOCK := requirements-lmeval.lock
LMEVAL_STAMP := $(LMEVAL_VENV)/.installed
# Extra pip-compile options for `make lock`, e.g. LOCK_ARGS=--upgrade (all) or LOCK_ARGS="--upgrade-package transformers";
# without them, pins already in the lock are kept where they still fit.
LOCK_ARGS ?=
CHECK_PYTHON = $(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "need Python 3.11: make ... PYTHON=python3.11")'

.PHONY: demo test test-fast bench venv lmeval-venv lock clean

venv: $(STAMP)

# A fresh venv each time the lock changes, so that it holds the lock and nothing else.
$(STAMP): $(LOCK) pyproject.toml
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-deps -r $(LOCK)
	$(PY) -m pip check
	touch $(STAMP)

lmeval-venv: $(LMEVAL_STAMP)

$(LMEVAL_STAMP): $(LMEVAL_LOCK) $(STAMP)
	$(PYTHON) -m venv --clear $(LMEVAL_VENV)
	$(LMEVAL_VENV)/bin/pip install --quiet --no-deps -r $(LMEVAL_LOCK)
	$(PY) -c 'import site; print(site.getsitepackages()[0])' > \
		"$$($(LMEVAL_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/project-venv.pth"
	$(LMEVAL_VENV)/bin/python -c 'import lm_eval.models.huggingface, torch, transformers'
	touch $(LMEVAL_STAMP)

# pip-compile resolves through pip, so against the indexes pip is configured with on this machine; none is written
# into the lock. The project itself is not installed: pyproject.toml only lends its dependency lists.
lock:
	@$(CHECK_PYTHON)
	test -x $(LOCK_VENV)/bin/pip-compile || { $(PYTHON) -m venv --clear $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet "$(PIP_TOOLS)"; }
	CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --extra dev --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --no-emit-trusted-host $(LOCK_ARGS) --output-file $(LOCK) pyproject.toml
	echo "$(LMEVAL)" > $(LOCK_VENV)/lmeval.in
	$(LOCK_VENV)/bin/pip-compile --quiet --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
		--no-emit-trusted-host --constraint $(LOCK) --output-file $(LOCK_VENV)/lmeval.txt $(LOCK_VENV)/lmeval.in
	grep -E '^[A-Za-z0-9]' $(LOCK) > $(LOCK_VENV)/project.pins
	{ echo "# make lock: what $(LMEVAL) adds to $(LOCK) (.venv-lmeval reads .venv for the rest)"; \
	  grep -E '^[A-Za-z0-9]' $(LOCK_VENV)/lmeval.txt | grep -vxF -f $(LOCK_VENV)/project.pins; } > $(LMEVAL_LOCK)

demo: $(STAMP)
	$(PY) scripts/demo.py

# -n auto: one pytest worker per core (pytest-xdist); --dist loadfile keeps each module's tests, and so its
# module-scoped fixtures (a reference run, a dataset), in one worker. --no-loadscope-reorder: modules go out in the
# order tests/conftest.py sorts them (the most slow tests first), not xdist's default (the most tests first, which
# left the long training modules for the end); --durations: the slowest tests, to see where the time goes.
XDIST := -n auto --dist loadfile --no-loadscope-reorder --durations=25

test: $(STAMP) $(LMEVAL_STAMP)
	$(PY) -m pytest $(XDIST) tests

# Everything but the tests marked slow (full training runs, long subprocesses).
test-fast: $(STAMP)
	$(PY) -m pytest $(XDIST) -m "not slow" tests

# Every benchmark in turn (~30 min on 2 cores; run on a quiet machine: see BENCHMARKS.md). One alone:
#   make bench BENCH=train_throughput    (or nanogpt_parity, resume_latency, node_resume_latency, spike_overhead,
#                                         convert_throughput, loader_throughput, eval_throughput)
BENCH ?= nanogpt_parity resume_latency node_resume_latency spike_overhead convert_throughput train_throughput \
	loader_throughput eval_throughput
bench: $(STAMP) $(LMEVAL_STAMP)
	set -e; for b in $(BENCH); do echo "== bench/$$b.py"; py=$(PY); \
		if [ $$b = eval_throughput ]; then py=$(LMEVAL_VENV)/bin/python; fi; $$py bench/$$b.py; done

clean:
	rm -rf runs data/demo data/demo_src
