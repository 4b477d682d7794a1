# The commands the README names. `make run` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint migrations-check worker beat bench-delivery clean

$(VENV)/.installed: requirements.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

## Start the whole shop with demo data on http://127.0.0.1:8000 (SQLite, no servers needed).
run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo
	./scripts/run_demo.sh

## Run the test suite (on PostgreSQL at 127.0.0.1:5432 when it answers, else SQLite).
test: $(VENV)/.installed
	DATABASE_URL="$$($(PY) -m config.dbprobe)" $(PY) -m pytest $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

migrations-check: $(VENV)/.installed
	$(PY) manage.py makemigrations --check --dry-run

worker: $(VENV)/.installed
	$(VENV)/bin/celery -A config worker -l info

beat: $(VENV)/.installed
	$(VENV)/bin/celery -A config beat -l info

clean:
	rm -rf $(VENV) db.sqlite3 var staticfiles
