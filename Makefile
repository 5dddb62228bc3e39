# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-decisions bench-grid clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/batchbench demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# The gate's false alarms and detection rate, and recommendation consistency: about 2 hours on
# a loaded 2-core machine (20 interleaved A/B jobs, 4 ci sweeps, 3 demo sweeps); resumable.
bench-decisions: $(STAMP)
	$(BIN)/python -m benchmarks.decisions

# Re-measure the grid the search benchmark replays (benchmarks/data/search_grid.json): 160
# short points, about an hour on a loaded 2-core machine; resumable.
bench-grid: $(STAMP)
	$(BIN)/python -m benchmarks.search_replay --measure

clean:
	rm -rf $(VENV) build *.egg-info
