# The two commands: `make run` (Luca on the embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: run test install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	@touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(BIN)/pip install -q -r requirements-test.txt
	@touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(BIN)/flask --app wsgi db upgrade
	@$(BIN)/flask --app wsgi users demo
	@echo "Luca is starting on http://$(HOST):$(PORT) — use the token above as 'Authorization: Bearer <token>'."
	$(BIN)/flask --app wsgi run --host $(HOST) --port $(PORT)

test: install-test
	$(BIN)/ruff check --select F,E9 luca tests config.py wsgi.py worker.py gunicorn.conf.py
	$(BIN)/pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
