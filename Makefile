# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SYMBOLS ?= btcusdt

.PHONY: run demo test check lint bench clean

# The runtime virtualenv (messenger, server, simulator), rebuilt when requirements change.
# tests/deploy/test_runtime.py builds one with this very rule and runs `make demo` / `make run` on it.
$(VENV)/.runtime: requirements.txt requirements-sim.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-sim.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements-bench.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(VENV)/.bench: requirements-bench.txt $(VENV)/.runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	touch $@

## run: messenger + server on :3333 against Binance (starts a local redis-server if none answers;
## restarts the messenger if it dies; Ctrl-C stops everything)
run: $(VENV)/.runtime
	VENV=$(VENV) scripts/run-local $(SYMBOLS)

## demo: the same against the local simulator, fully offline
demo: $(VENV)/.runtime
	VENV=$(VENV) scripts/run-local --demo $(SYMBOLS)

## test: lint, types and the whole test suite on two workers (what CI runs); then the tests of what the transport
## does (connections, frames, faults, books) again with frames read by picows (WS_TRANSPORT=picows;
## the chaos run shortened to 30 s). `make test PICOWS_TESTS=tests` runs every messenger test on both.
PICOWS_TESTS ?= tests/e2e/test_chaos.py tests/e2e/test_reconnects.py tests/e2e/test_freshness.py \
	tests/e2e/test_foundation.py tests/e2e/test_order_books.py tests/e2e/test_kinds_and_push.py
test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2
	TRANSMUTE_TEST_WS_TRANSPORT=picows CHAOS_DURATION_S=30 $(BIN)/pytest -n 2 -m messenger $(PICOWS_TESTS)

## bench: every benchmark beside its baseline (~22 min); writes bench/results/{results.md,.json,.png}
bench: $(VENV)/.bench
	@command -v wrk >/dev/null || { echo "bench needs wrk: apt-get install wrk"; exit 1; }
	$(BIN)/python -m bench.run

## check: exactly what CI runs
check: test

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-output
