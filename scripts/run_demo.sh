#!/usr/bin/env bash
# The demo shop: a Celery worker with its beat (on the no-server filesystem broker unless
# CELERY_BROKER_URL says otherwise) and the web server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin

# A worker that dies (killed, out of memory, a broker it gave up on) is started again after a
# second, as a supervisor would in production; paid orders it left behind are delivered by the
# beat's sweeper once it is back.
supervise_worker() {
  local child=""
  trap 'kill "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
  while true; do
    "$venv/celery" -A config worker --beat --concurrency=2 --loglevel=warning &
    child=$!
    status=0
    wait "$child" || status=$?
    echo "The Celery worker exited (status $status); starting it again in 1 s." >&2
    sleep 1
  done
}
supervise_worker &
worker=$!
trap 'kill "$worker" 2>/dev/null; wait "$worker" 2>/dev/null' EXIT INT TERM

echo "The shop is at http://127.0.0.1:8000  (admin: /admin/, API docs: /api/docs/)"
"$venv/python" manage.py runserver 127.0.0.1:8000
