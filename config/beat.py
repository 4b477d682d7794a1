"""A beat that is harmless when started twice: only the holder of a lease in Redis sends periodic tasks.

Run one `celery -A config beat` per deployment. If a second one starts anyway (two worker hosts each
started with `--beat`, a deploy that overlaps the old and the new beat), it stays a standby: every tick
it tries to take the lease (`SET beat-lease <id> NX PX <ttl>`), finds it held, and sends nothing. The
holder renews the lease on each tick (it ticks at least every third of the lease), so a standby takes
over within BEAT_LEASE_SECONDS of the holder dying, and at once when the holder shuts down cleanly (it
gives the lease back). While Redis is unreachable no beat sends anything — nor could it, Redis being
the broker — and the first to tick after it returns takes the lease.

The lease lives on BEAT_LEASE_URL (default: CELERY_BROKER_URL when that is Redis). Without Redis (the
demo's filesystem broker) there is nothing shared to lock and the beat behaves as Celery's own.
Every periodic task is safe to run twice anyway (services are idempotent); the lease keeps a second
beat from doubling the load and the alerts.
"""

import contextlib
import logging
import os
import socket
import uuid

import redis
from celery.beat import PersistentScheduler
from django.conf import settings

logger = logging.getLogger(__name__)

LEASE_KEY = "cardshop:beat-lease"

# Take the lease if it is free, or renew it if it is ours: one atomic step.
_ACQUIRE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# Give the lease back only if it is still ours (it may have lapsed and gone to another beat).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def lease_url() -> str:
    url = os.environ.get("BEAT_LEASE_URL") or settings.CELERY_BROKER_URL
    return url if url.startswith(("redis://", "rediss://", "unix://")) else ""


class SingleBeatScheduler(PersistentScheduler):
    """Celery's persistent scheduler, sending only while it holds the beat lease."""

    def __init__(self, *args, **kwargs):
        self.lease_seconds = float(os.environ.get("BEAT_LEASE_SECONDS", "30"))
        self.beat_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        url = lease_url()
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) if url else None
        self.is_leader = self._redis is None
        super().__init__(*args, **kwargs)

    def lease_hold(self) -> bool:
        """Take or renew the lease; True while this beat may send."""
        if self._redis is None:
            return True
        try:
            held = bool(self._redis.eval(_ACQUIRE, 1, LEASE_KEY, self.beat_id, int(self.lease_seconds * 1000)))
        except (redis.RedisError, OSError):  # logged below once, as the lease lost, not every tick
            logger.debug("beat.lease_unreachable", extra={"beat": self.beat_id}, exc_info=True)
            held = False
        if held != self.is_leader:
            logger.warning("beat.lease_taken" if held else "beat.lease_lost", extra={"beat": self.beat_id})
            self.is_leader = held
        return held

    def tick(self, *args, **kwargs):
        most = self.lease_seconds / 3
        if not self.lease_hold():
            return most  # a standby: look again soon, send nothing
        return min(super().tick(*args, **kwargs), most)

    def close(self):
        if self._redis is not None and self.is_leader:
            with contextlib.suppress(redis.RedisError, OSError):  # else it lapses by itself
                self._redis.eval(_RELEASE, 1, LEASE_KEY, self.beat_id)
        super().close()
