"""The Redis cache fails open: with Redis unreachable, reads miss and writes are skipped."""

import socket

from config.cache import ResilientRedisCache


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cache_with_redis_down_misses_instead_of_raising():
    cache = ResilientRedisCache(
        f"redis://127.0.0.1:{_dead_port()}/0",
        {"OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2}},
    )
    assert cache.get("k") is None
    assert cache.get("k", "fallback") == "fallback"
    assert cache.get("k", default=3) == 3
    cache.set("k", 1)
    assert cache.add("k", 1) is False
    assert cache.get_many(["a", "b"]) == {}
