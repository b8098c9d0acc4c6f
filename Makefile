# The two commands: `make run` (Luca on the embedded default, served by gunicorn) and `make test` (the whole
# suite). `make dev` is Flask's development server (reloads on change) for working on Luca itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

# One gunicorn worker on the embedded SQLite default (one writer), its threads carry the concurrency.
RUN_THREADS ?= 8
LITELLM_VENV ?= .venv-litellm

.PHONY: run dev test bench faults install install-test install-bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	@touch $@

$(VENV)/.installed-bench: requirements-bench.txt $(VENV)/.installed-test
	$(BIN)/pip install -q -r requirements-bench.txt
	@command -v wrk >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk)
	@touch $@

# LiteLLM (its proxy is the peer of `python -m bench peer`) in a venv of its own: its pins clash with Luca's.
# tests/support/litellm_venv.py makes it from tests/support/litellm/requirements.txt, for the tests too.
$(LITELLM_VENV)/.requirements-sha256: tests/support/litellm/requirements.txt $(VENV)/.installed-test
	$(BIN)/python -c "from tests.support.litellm_venv import litellm_python; litellm_python()"

install: $(VENV)/.installed

# The tests' OpenID Connect provider (node's oidc-provider), from its committed package-lock.json.
tests/support/oidc/node_modules/.package-lock.json: tests/support/oidc/package-lock.json
	cd tests/support/oidc && npm ci --no-audit --no-fund

install-test: $(VENV)/.installed-test tests/support/oidc/node_modules/.package-lock.json

install-bench: $(VENV)/.installed-bench $(LITELLM_VENV)/.requirements-sha256

run: install
	$(BIN)/flask --app wsgi db upgrade
	@$(BIN)/flask --app wsgi users demo
	@echo "Luca is starting on http://$(HOST):$(PORT) — use the token above as 'Authorization: Bearer <token>'."
	HOST=$(HOST) PORT=$(PORT) WEB_CONCURRENCY=1 GUNICORN_THREADS=$(RUN_THREADS) $(BIN)/gunicorn wsgi:app -c gunicorn.conf.py

dev: install
	$(BIN)/flask --app wsgi db upgrade
	@$(BIN)/flask --app wsgi users demo
	$(BIN)/flask --app wsgi run --debug --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/ruff check --select F,E9 luca tests config.py wsgi.py worker.py gunicorn.conf.py
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install-bench
	LITELLM_VENV=$(LITELLM_VENV) $(BIN)/python -m bench $(BENCH_ARGS)

faults: install-test
	$(BIN)/python -m bench.faults $(FAULTS_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
