"""The Redis broker transport, with one fix: a worker survives Redis restarting while it runs a task.

kombu (5.7) closes a channel by first reading the reply to its pending BRPOP. When Redis has just gone
away that read raises, the close stops half way (the channel is not marked closed), and Celery's
consumer then closes the connection a second time, after detaching the transport: the channel's close
now tries to give back the task it still holds unacknowledged (acks_late), builds a Redis client from
the detached transport and fails with "AttributeError: 'NoneType' object has no attribute 'hostname'",
which Celery treats as unrecoverable: the worker exits for good. Here a connection error during that
read ends the close normally instead, so the consumer reconnects like after any other outage.

Used for `redis://` brokers through CELERY_BROKER_TRANSPORT (config/settings.py);
tests/escrow/test_delivery_faults.py::test_worker_survives_redis_restarting_mid_task is the proof.
"""

from queue import Empty

from kombu.transport import redis


class Channel(redis.Channel):
    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except self.connection_errors:
            if not self._closing:
                raise
            raise Empty() from None  # the reply is lost with the connection; the close carries on


class Transport(redis.Transport):
    Channel = Channel
