# Two entry points: `make demo` (set up, generate demo data, run the demo release) and
# `make test` (set up, lint, type-check, run the whole test suite on the newest supported set,
# then the core of the suite on Spark 3.5 with the oldest supported numpy, pandas and pyarrow,
# and again on Python 3.13 and Java 21 in a Debian 13 root).
# Environments: .venv from constraints/newest.txt, .venv-oldest from constraints/oldest.txt,
# .debian-trixie (built by .ci/debian-root: needs root) with constraints/newest.txt.
PYTHON ?= python3
# The oldest set (Spark 3.5.0, numpy 1.23.5) installs on Python 3.10 and 3.11 only.
OLDEST_PYTHON ?= $(PYTHON)
VENV := .venv
BIN := $(VENV)/bin
OLDEST := .venv-oldest
DEBIAN_ROOT := .debian-trixie
DEMO_ROWS ?= 200000
export SPARK_LOCAL_IP ?= 127.0.0.1
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
# The core of the suite, run on the other environments: every test but the standalone cluster,
# the killed jobs, the large-sample statistical audits and the browser (those run on the newest
# set; they test Spark's scheduling, the operating system and the mathematics, which the other
# environments do not change). The README lists what the core covers.
CORE := not browser and not cluster and not crash and not slow
# The Python files vermin checks against the oldest Python we support (3.10).
SOURCES := dp_ops pipelines jobs tests benchmarks

.PHONY: setup setup-oldest demo survey-demo series-demo test test-newest test-oldest test-debian lint bench clean check-tools browser

check-tools:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null || { \
	  echo "make: needs Python 3.10 or newer as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1 || echo nothing));"; \
	  echo "      give one with PYTHON=/path/to/python3.X, e.g. make test PYTHON=python3.12"; exit 1; }
	@command -v java >/dev/null || { echo "make: needs Java 17 or 21 (java on the PATH) for Spark"; exit 1; }

$(BIN)/dprelease: pyproject.toml constraints/newest.txt
	@$(MAKE) --no-print-directory check-tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/newest.txt -e '.[test,connect]'
	@touch $@

$(OLDEST)/bin/dprelease: pyproject.toml constraints/oldest.txt
	@$(MAKE) --no-print-directory check-tools
	@$(OLDEST_PYTHON) -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 11) else 1)' 2>/dev/null || { \
	  echo "make: the oldest supported set (Spark 3.5.0, numpy 1.23.5) needs Python 3.10 or 3.11 as"; \
	  echo "      '$(OLDEST_PYTHON)' (found: $$($(OLDEST_PYTHON) --version 2>&1)); give one with OLDEST_PYTHON=python3.11"; exit 1; }
	$(OLDEST_PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/pip install --quiet --upgrade pip
	$(OLDEST)/bin/pip install --quiet -c constraints/oldest.txt -e '.[test]'
	@touch $@

setup: $(BIN)/dprelease

setup-oldest: $(OLDEST)/bin/dprelease

demo: setup
	$(BIN)/dprelease generate-demo --rows $(DEMO_ROWS) --output data/demo/microdata --spark-profile conf/spark/local.yaml
	$(BIN)/dprelease run conf/demo.yaml --spark-profile conf/spark/local.yaml
	@echo "Tables and manifest: out/demo/<release-id>/ (newest: $$(ls -t out/demo | grep -v '^\.' | head -1))"

survey-demo: setup
	$(BIN)/dprelease generate-demo --rows $(DEMO_ROWS) --randomized-response --output data/survey/microdata --spark-profile conf/spark/local.yaml
	$(BIN)/dprelease run conf/survey_rr.yaml --spark-profile conf/spark/local.yaml

SERIES_MONTHS ?= 2027-01 2027-02 2027-03
series-demo: setup
	@test -f out/series/ledger.sqlite || $(BIN)/dprelease budget init registrations --ledger out/series/ledger.sqlite --rho 2
	@i=0; for m in $(SERIES_MONTHS); do i=$$((i+1)); \
	  $(BIN)/dprelease generate-demo --rows $(DEMO_ROWS) --cohort $$i --output data/registrations/$$m --spark-profile conf/spark/local.yaml && \
	  $(BIN)/dprelease run conf/series_monthly.yaml --period $$m --spark-profile conf/spark/local.yaml || exit 1; done
	$(BIN)/dprelease budget show registrations --ledger out/series/ledger.sqlite

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/vermin -q -t=3.10- --no-tips --violations --eval-annotations $(SOURCES)

# Chromium from the distribution's packages, for the test that renders `dprelease report`'s page.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  command -v apt-get >/dev/null || { echo "make: install Chromium (the browser tests need it)"; exit 1; }; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

test-newest: lint browser
	$(BIN)/pytest

# Spark 3.5 with the oldest numpy, pandas, pyarrow and great-expectations we support. The
# Connect tests skip themselves there (Connect releases need pyspark 4).
test-oldest: setup-oldest
	PYSPARK_PYTHON=$(abspath $(OLDEST)/bin/python) PATH=$(abspath $(OLDEST)/bin):$$PATH \
	  $(OLDEST)/bin/pytest -m "$(CORE)"

# Python 3.13 (the python3 of Debian 13, Ubuntu 25.04 and Fedora 41) with Java 21, the newest set.
test-debian:
	.ci/debian-root $(DEBIAN_ROOT) pytest -p no:cacheprovider -m "$(CORE)"

test: test-newest test-oldest test-debian

bench: setup
	$(BIN)/pip install --quiet -c constraints/newest.txt -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_startup.py --repeats 5
	$(BIN)/python benchmarks/bench_samplers.py --draws 1000000
	$(BIN)/python benchmarks/bench_partitions.py --rows 100000 --repeats 3
	$(BIN)/python benchmarks/bench_release.py --rows 1000 1000000 10000000
	$(BIN)/python benchmarks/bench_scale.py --cluster --repeats 1
	$(BIN)/python benchmarks/bench_release.py --rows 1000000 --processes 5
	$(BIN)/python benchmarks/bench_accuracy.py --trials 50
	$(BIN)/python benchmarks/bench_real.py --trials 5

clean:
	rm -rf $(VENV) $(OLDEST) $(DEBIAN_ROOT) out data/demo dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache
