"""Where the app processes spend their time under load: cProfile around each request and each task.

Only with BENCH_PROFILE_DIR set (`bench/load.py --profile`) and only under `bench.settings`. Each web
thread profiles the requests it serves and each Celery process the tasks it runs; every process adds
its profiles up and writes them to `<dir>/<role>-<pid>.prof` every few seconds (pstats format), which
`bench/load.py` merges per role and prints. cProfile slows the code it watches (by a third or so), so
a profiled run's throughput is not a figure; the shares between functions are.
"""

import cProfile
import os
import pstats
import threading
import time

_lock = threading.Lock()
_stats: list[pstats.Stats | None] = [None]
_written = [0.0]
WRITE_SECONDS = 2.0


def _add(profile: cProfile.Profile, role: str) -> None:
    profile.create_stats()
    with _lock:
        if _stats[0] is None:
            _stats[0] = pstats.Stats(profile)
        else:
            _stats[0].add(profile)
        now = time.monotonic()
        if now - _written[0] > WRITE_SECONDS:
            _written[0] = now
            _stats[0].dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"{role}-{os.getpid()}.prof"))


def _reset_in_child() -> None:
    _stats[0] = None
    _written[0] = 0.0


class ProfileMiddleware:
    """First in MIDDLEWARE: profile the whole request in the thread serving it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        profile = cProfile.Profile()
        profile.enable()
        try:
            return self.get_response(request)
        finally:
            profile.disable()
            _add(profile, "web")


_task_profiles: dict[str, cProfile.Profile] = {}


def _task_start(task_id=None, **kwargs) -> None:
    profile = cProfile.Profile()
    _task_profiles[task_id] = profile
    profile.enable()


def _task_end(task_id=None, **kwargs) -> None:
    profile = _task_profiles.pop(task_id, None)
    if profile is not None:
        profile.disable()
        _add(profile, "worker")


def install_task_hooks() -> None:
    from celery.signals import task_postrun, task_prerun

    os.register_at_fork(after_in_child=_reset_in_child)
    task_prerun.connect(_task_start, weak=False)
    task_postrun.connect(_task_end, weak=False)
