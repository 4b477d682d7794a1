#!/usr/bin/env bash
# The demo shop: a Celery worker with its beat (on the no-server filesystem broker unless
# CELERY_BROKER_URL says otherwise) and the web server. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
# Settings keep DEBUG off unless told: the demo on 127.0.0.1 wants its error pages and static files.
export DEBUG="${DEBUG:-1}"

# The worker is started again whenever it dies (killed, out of memory), as a supervisor does in
# production; the paid orders it left undelivered are picked up by the beat's sweeper once it is
# back. Each worker runs in its own process group, so a killed worker's pool and beat go with it.
supervise_worker() {
  local child="" stopping=0 status
  trap 'stopping=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null || true' TERM HUP INT
  while [ "$stopping" = 0 ]; do
    if command -v setsid >/dev/null; then
      setsid "$venv/celery" -A config worker --beat --concurrency=2 --loglevel=warning &
    else
      "$venv/celery" -A config worker --beat --concurrency=2 --loglevel=warning &
    fi
    child=$!
    status=0
    wait "$child" || status=$?
    while kill -0 "$child" 2>/dev/null; do wait "$child" || true; done  # a warm shutdown takes a moment
    kill -KILL -- "-$child" 2>/dev/null || true
    [ "$stopping" = 0 ] || break
    echo "The Celery worker exited (status $status); starting it again in 1 s." >&2
    sleep 1
  done
}
supervise_worker &
supervisor=$!
trap 'kill -TERM "$supervisor" 2>/dev/null; wait "$supervisor" 2>/dev/null' EXIT
trap 'exit 130' INT TERM  # run the EXIT trap, which waits for the worker's warm shutdown

echo "The shop is at http://127.0.0.1:8000  (admin: /admin/, API docs: /api/docs/)"
"$venv/python" manage.py runserver 127.0.0.1:8000
