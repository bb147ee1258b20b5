# Two entry points: `make demo` (set up, generate demo data, run the demo release) and
# `make test` (set up, lint, type-check, run the whole test suite). Both create .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEMO_ROWS ?= 200000
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup demo test lint bench clean

$(BIN)/dprelease: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11) and Java 17"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/dprelease

demo: setup
	$(BIN)/dprelease generate-demo --rows $(DEMO_ROWS) --output data/demo/microdata --spark-profile conf/spark/local.yaml
	$(BIN)/dprelease run conf/demo.yaml --spark-profile conf/spark/local.yaml
	@echo "Tables and manifest: out/demo/<release-id>/ (newest: $$(ls -t out/demo | grep -v '^\.' | head -1))"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: setup
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_samplers.py --draws 1000000
	$(BIN)/python benchmarks/bench_release.py --rows 1000 1000000 10000000
	$(BIN)/python benchmarks/bench_release.py --rows 1000000 --processes 5
	$(BIN)/python benchmarks/bench_accuracy.py --trials 50
	$(BIN)/python benchmarks/bench_real.py --trials 5

clean:
	rm -rf $(VENV) out data/demo dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
