# melius_larq: every target sets itself up on a fresh machine and is quick when already set up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-deps
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup data test test-all lint format demo bench clean

setup: $(STAMP) data

$(STAMP): requirements.txt requirements-test.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-test.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# Fashion-MNIST ships in Debian; install it where apt is available and the data is missing.
data:
	@if [ ! -f $(FMNIST) ] && command -v apt-get >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist \
		|| echo "warning: could not install dataset-fashion-mnist; pass --data-dir instead"; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# make test: every code path once (one representative model per builder path), one pytest
# run on 2 workers; a module with shared fixtures stays on one worker (its xdist_group).
# make test-all (CI): every registry model and the tests marked large, in two runs with fresh
# workers: the registry-wide tests build ~150 models, and a worker that also ran the training
# tests would grow past the machine's memory. -rs lists every skip and why.
PYTEST := $(PY) -m pytest -n 2 --dist loadgroup -q -rs
MODEL_TESTS := tests/test_models.py tests/test_accounting.py tests/test_lce_conversion.py
test: setup lint
	$(PYTEST) --durations=15 $(PYTEST_ARGS)

test-all: setup lint
	$(PYTEST) --durations=25 --run-large $(PYTEST_ARGS) $(MODEL_TESTS)
	$(PYTEST) --durations=25 --run-large $(PYTEST_ARGS) $(addprefix --ignore=,$(MODEL_TESTS))

demo: setup
	$(PY) -m melius_larq demo --results docs/demo

# Every table of docs/benchmarks.md, from one run (flatbuffers under runs/, not committed).
bench: setup
	$(PY) -m melius_larq.deploy.suite --out docs/benchmarks --flatbuffers runs/bench \
		--page docs/benchmarks.md

clean:
	rm -rf $(VENV) runs bench_results .pytest_cache
