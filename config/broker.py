"""The Redis broker transport, with two changes: a worker survives Redis restarting while it runs a
task, and a publish reuses its Redis client.

kombu (5.7) closes a channel by first reading the reply to its pending BRPOP. When Redis has just gone
away that read raises, the close stops half way (the channel is not marked closed), and Celery's
consumer then closes the connection a second time, after detaching the transport: the channel's close
now tries to give back the task it still holds unacknowledged (acks_late), builds a Redis client from
the detached transport and fails with "AttributeError: 'NoneType' object has no attribute 'hostname'",
which Celery treats as unrecoverable: the worker exits for good. Here a connection error during that
read ends the close normally instead, so the consumer reconnects like after any other outage.

kombu builds a new `redis.Redis` client for every message it publishes (`conn_or_acquire` calls
`_create_client`), on the channel's one connection pool. redis-py's client is costly to build (it copies
some 170 response callbacks into a case-insensitive dict): ~110 µs of CPU per `Task.delay()`, a fifth
of the publish (bench/enqueue_cpu.py). Here a channel keeps the client it built and reuses it while its
pool stands; the pool still hands each command a connection, reconnecting a dead one as before, and a
client is safe to share between threads. When kombu drops the pool (the channel closing, a fork), the
next publish builds a new client on the new pool. The worker's own client (`Channel.client`, on the
asynchronous pool) is kombu's as before.

Used for `redis://` brokers through CELERY_BROKER_TRANSPORT (config/settings.py);
tests/escrow/test_delivery_faults.py::test_worker_survives_redis_restarting_mid_task is the proof.
"""

from queue import Empty

from kombu.transport import redis


class Channel(redis.Channel):
    _sync_client = None  # built on the first publish, for as long as its pool stands

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool  # kombu's property: builds a new pool after _disconnect_pools() dropped the old one
        if self._sync_client is None or self._sync_client.connection_pool is not pool:
            self._sync_client = super()._create_client()
        return self._sync_client

    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except self.connection_errors:
            if not self._closing:
                raise
            raise Empty() from None  # the reply is lost with the connection; the close carries on


class Transport(redis.Transport):
    Channel = Channel
