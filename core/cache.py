"""The shared cache's Redis backend, with one client object per connection pool.

Django's `RedisCacheClient.get_client` builds a new `redis.Redis` around the pool on every cache call;
redis-py's constructor sets up its response callbacks each time, which was ~1.4 % of a web worker's CPU
under the purchase benchmark (bench/purchase.py, py-spy). A `redis.Redis` is safe to share between
threads (each command borrows a connection from the pool), so one per pool is kept.
"""

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, object] = {}

    def get_client(self, key=None, *, write=False):
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = self._client(connection_pool=self._get_connection_pool(write))
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server, params) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient


def redis_client(alias: str = "default"):
    """The redis-py client behind cache `alias`, or None when that cache is not Redis (the demo, tests):
    for what the cache API cannot say in one round trip (a counter's window, a blocking wait)."""
    backend = caches[alias]
    if not isinstance(backend, RedisCache):
        return None
    return backend._cache.get_client(write=True)
