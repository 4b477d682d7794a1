#!/usr/bin/env bash
# The demo shop: a Celery worker with its beat (on the no-server filesystem broker unless
# CELERY_BROKER_URL says otherwise) and the web server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
# Settings keep DEBUG off unless told: the demo on 127.0.0.1 wants its error pages and static files.
export DEBUG="${DEBUG:-1}"

"$venv/celery" -A config worker --beat --concurrency=2 --loglevel=warning &
worker=$!
trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null' EXIT INT TERM

echo "The shop is at http://127.0.0.1:8000  (admin: /admin/, API docs: /api/docs/)"
"$venv/python" manage.py runserver 127.0.0.1:8000
