"""config/broker.py: a channel publishes through one Redis client, which reconnects as before."""

import redis
from kombu import Connection

from tests.processes import redis_server, requires_redis_server


@requires_redis_server
def test_a_channel_publishes_through_one_client_that_outlives_a_redis_restart(tmp_path):
    with redis_server(tmp_path) as server, Connection(server.url(), transport="config.broker:Transport") as connection:
        producer = connection.Producer()
        channel = producer.channel
        producer.publish({"order_pk": 1}, routing_key="deliveries")
        client = channel._create_client()
        producer.publish({"order_pk": 2}, routing_key="deliveries")
        assert channel._create_client() is client
        assert redis.Redis.from_url(server.url()).llen("deliveries") == 2

        server.stop(kill=True)  # without persistence: both messages are gone
        server.start()
        producer.publish({"order_pk": 3}, routing_key="deliveries")  # the pool reconnects, as before
        assert redis.Redis.from_url(server.url()).llen("deliveries") == 1

        channel._disconnect_pools()  # what kombu does on close and after a fork
        producer.publish({"order_pk": 4}, routing_key="deliveries")
        assert channel._create_client() is not client
        assert channel._create_client().connection_pool is channel.pool
        assert redis.Redis.from_url(server.url()).llen("deliveries") == 2
