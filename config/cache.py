"""Django's Redis cache, made to fail open: the cache (throttle counters, the platform-settings copy)
is an optimisation, so a Redis outage must not turn requests into 500s. Reads miss, writes are
skipped, a warning is logged at most once a minute, and every failed call counts in the Prometheus
counter ``postflow_cache_errors_total{operation}`` on ``/metrics``.

A decision (docs/operations.md): while Redis is down the rate limits are not enforced (throttles fail
open) rather than refusing every request; the login lockout does not depend on the cache (django-axes
keeps its counts in the database), so password guessing stays limited."""

from __future__ import annotations

import functools
import logging
import time

from django.core.cache.backends.redis import RedisCache
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("postflow.cache")
_last_warning = [0.0]


@functools.cache
def cache_errors():
    """The ``postflow_cache_errors_total`` counter, labelled by cache operation (``get``, ``add``…).
    Created on first use, like config.observability's metrics (no Prometheus import at startup)."""
    from prometheus_client import Counter

    return Counter("postflow_cache_errors_total", "Cache calls that failed (Redis down)", ["operation"])


def _fail_open(default=None, *, arg_default: bool = False):
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                cache_errors().labels(method.__name__).inc()
                if time.monotonic() - _last_warning[0] > 60:
                    _last_warning[0] = time.monotonic()
                    logger.warning(
                        "cache (Redis) unavailable: throttles are NOT enforced until it is back: %s",
                        exc,
                        extra={"event": "cache_unavailable"},
                    )
                if arg_default:
                    return kwargs.get("default", args[1] if len(args) > 1 else None)
                return default

        return wrapper

    return decorate


class ResilientRedisCache(RedisCache):
    get = _fail_open(arg_default=True)(RedisCache.get)
    get_many = _fail_open({})(RedisCache.get_many)
    set = _fail_open(None)(RedisCache.set)
    set_many = _fail_open([])(RedisCache.set_many)
    add = _fail_open(False)(RedisCache.add)
    delete = _fail_open(False)(RedisCache.delete)
    delete_many = _fail_open(None)(RedisCache.delete_many)
    touch = _fail_open(False)(RedisCache.touch)
    has_key = _fail_open(False)(RedisCache.has_key)
