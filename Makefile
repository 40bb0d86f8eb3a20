# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DB ?= auditcov.db

.PHONY: run example test test-deps lint bench e2e clean

$(BIN)/auditcov: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-extras: $(BIN)/auditcov
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

# The sink; its banner shows what to give kube-apiserver from config/: policy.yaml and a kubeconfig made from
# webhook.kubeconfig (config/kind.yaml, config/deploy/ and config/auditsink.yaml are for clusters; see README).
run: $(BIN)/auditcov
	$(BIN)/auditcov serve --config config/sink.toml --db $(DB)

# A real recorded run (examples/e2e-v1.36.3, see examples/README.md) loaded into the store `make run` serves;
# loading it again changes nothing. Then `make run` and open http://127.0.0.1:8080/.
example: $(BIN)/auditcov
	$(BIN)/auditcov merge examples/e2e-v1.36.3 --db $(DB)

test: lint test-deps
	$(BIN)/python -m pytest -q

# The Debian packages the tests use (genhtml, xmllint, ...), installed when missing: see hack/test-deps.sh.
test-deps:
	hack/test-deps.sh

lint: $(VENV)/.test-extras
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.test-extras
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/match.py

# End to end against a real kube-apiserver (see hack/e2e/build*.sh, tests/e2e/): builds what is missing
# (first run: modules and a cold Go build cache), then runs the acceptance tests, and prints per mode the audit
# log against the store, unmatched events by reason and the audit metrics, and how long it took.
# AUDITCOV_E2E_FOCUS=FILE runs the tests listed in FILE (focus.txt's format) instead of tests/e2e/focus.txt.
e2e: $(VENV)/.test-extras
	@start=$$(date +%s); \
	hack/e2e/build.sh && hack/e2e/build-cover.sh && hack/e2e/build-1.18.sh && \
	AUDITCOV_E2E=1 $(BIN)/python -m pytest -q -m e2e tests/e2e; \
	status=$$?; cat $${AUDITCOV_E2E_OUT:-build/e2e}/*/summary.txt 2>/dev/null; \
	echo "make e2e: $$(( $$(date +%s) - start ))s"; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
