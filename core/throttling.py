"""DRF's rate limits, counted in Redis in one round trip per request, open rather than failing when
Redis is away.

The configuration is DRF's (`DEFAULT_THROTTLE_CLASSES`, `DEFAULT_THROTTLE_RATES`, a view's
`throttle_classes` and `throttle_scope`), and so are the answers (429 with `Retry-After` from
`wait()`). The counting is not: DRF's `SimpleRateThrottle` reads a list of timestamps and writes it
back, two Redis calls per throttle, four for a request with a user and a scope throttle. Here each
throttle is a fixed-window counter (one key per scope, client and window, which expires with the
window), and the first throttle DRF asks counts the request for every throttle of the view at once:
one pipeline of `INCR` and `EXPIRE` per key, one round trip in all. The others read the answer
from the request. A client may make up to twice its rate across the boundary of two windows; a
throttled one is told to come back when its window ends.

A restart of Redis (it keeps nothing on disk) must not turn every request into an error: for the
seconds it takes, requests go through unthrottled, and each is logged.

Requests without a user are counted by the client's address as `core.addresses.client_ip` finds
it (the same address the login lock-out records), never by the raw X-Forwarded-For header, which
the client writes itself.
"""

import time
from typing import TYPE_CHECKING

import structlog
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework import throttling

from core.addresses import client_ip

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

log = structlog.get_logger(__name__)

# Where a request keeps what its throttles counted: cache key -> (requests in the window, seconds
# until the window ends). Empty when Redis did not answer.
_COUNTS = "_throttle_counts"


def _windows_count(windows: dict[str, int]) -> dict[str, tuple[int, float]]:
    """Count one request in the current window of each throttle key (key -> window in seconds)."""
    now = time.time()
    slots = {key: int(now // duration) for key, duration in windows.items()}
    cache = caches["default"]
    try:
        if isinstance(cache, RedisCache):
            names = [cache.make_and_validate_key(f"{key}:{slots[key]}") for key in windows]
            # Django's Redis backend keeps its redis-py client behind `_cache`; counters need its
            # pipeline, which the cache API does not offer.
            with cache._cache.get_client(None, write=True).pipeline(transaction=False) as pipe:
                for name, duration in zip(names, windows.values(), strict=True):
                    pipe.incr(name)
                    pipe.expire(name, duration)
                counts = pipe.execute()[0::2]
        else:  # a cache in the process's memory (the fast tests): the same counters, call by call
            counts = []
            for key, duration in windows.items():
                cache.add(f"{key}:{slots[key]}", 0, timeout=duration)
                counts.append(cache.incr(f"{key}:{slots[key]}"))
    except (RedisError, OSError) as exc:
        log.warning("throttle_cache_unavailable", error=repr(exc))
        return {}
    return {
        key: (int(count), (slots[key] + 1) * duration - now)
        for (key, duration), count in zip(windows.items(), counts, strict=True)
    }


def _request_counts(request: "Request", view: "APIView") -> dict[str, tuple[int, float]]:
    """What the view's throttles counted for this request; counted on the first call only."""
    counts = getattr(request, _COUNTS, None)
    if counts is None:
        windows = {}
        for throttle in view.get_throttles():
            if isinstance(throttle, _WindowCounter) and (key := throttle.counter_key(request, view)) is not None:
                windows[key] = throttle.duration
        counts = _windows_count(windows) if windows else {}
        setattr(request, _COUNTS, counts)
    return counts


class _WindowCounter:
    """Turns one of DRF's throttles into a fixed-window counter counted with the view's others."""

    _wait: float | None = None

    def get_ident(self, request: "Request") -> str:
        return client_ip(request) or ""

    def counter_key(self, request: "Request", view: "APIView") -> str | None:
        """The key this throttle counts the request under; None where it does not apply."""
        if self.rate is None:
            return None
        return self.get_cache_key(request, view)

    def allow_request(self, request: "Request", view: "APIView") -> bool:
        key = self.counter_key(request, view)
        if key is None:
            return True
        counted = _request_counts(request, view).get(key)
        if counted is None:  # Redis is away: open
            return True
        count, self._wait = counted
        return count <= self.num_requests

    def wait(self) -> float | None:
        return self._wait


class AnonRateThrottle(_WindowCounter, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_WindowCounter, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(_WindowCounter, throttling.ScopedRateThrottle):
    def counter_key(self, request: "Request", view: "APIView") -> str | None:
        # DRF's scoped throttle learns its scope, and so its rate, from the view it is asked about.
        self.scope = getattr(view, self.scope_attr, None)
        if not self.scope:
            return None
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().counter_key(request, view)
