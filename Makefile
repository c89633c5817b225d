# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest -q tests

# Every benchmark in turn (~25 min on 2 cores; run on a quiet machine: see BENCHMARKS.md). One alone:
#   make bench BENCH=train_throughput    (or nanogpt_parity, resume_latency, convert_throughput, loader_throughput)
BENCH ?= nanogpt_parity resume_latency convert_throughput train_throughput loader_throughput
bench: $(STAMP)
	set -e; for b in $(BENCH); do echo "== bench/$$b.py"; $(PY) bench/$$b.py; done

clean:
	rm -rf runs data/demo data/demo_src
