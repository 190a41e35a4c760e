# `make run` and `make test` each create or refresh .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOPOLOGY ?= topologies/two-node-metro.yaml
DURATION ?= 30

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/qnemu up $(TOPOLOGY) --duration $(DURATION)

test: $(STAMP)
	$(BIN)/ruff check qnemu tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check qnemu tests bench
	$(BIN)/ruff format --check qnemu tests bench

bench: $(STAMP)
	$(BIN)/python bench/broker_ops.py
	$(BIN)/python bench/link_throughput.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/repeater_chain.py
	$(BIN)/python bench/teleport.py
	$(BIN)/python bench/ring_scale.py
	$(BIN)/python bench/broker_scale.py
	$(BIN)/python bench/qkd_postprocessing.py
	$(BIN)/python bench/decoy_bb84.py

clean:
	rm -rf $(VENV) qnemu-runs .pytest_cache
