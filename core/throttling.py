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

`BacklogThrottle` is not a rate: it refuses new orders, for everyone, while more orders wait
behind the API than `MAX_PENDING_ORDERS` (accepted, not yet confirmed by settlement), as the outbox
relay last counted them (`backlog_report`). It reads that count in the same round trip.
"""

import time
from typing import TYPE_CHECKING

import structlog
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError
from rest_framework import throttling

from core.addresses import client_ip

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

log = structlog.get_logger(__name__)

# Where a request keeps what its throttles counted, (cache key -> (requests in the window, seconds
# until the window ends), cache key -> value read). Both empty when Redis did not answer.
_COUNTS = "_throttle_counts"


# How many orders wait behind the API, as the relay last counted them. It expires when the relay
# stops reporting, and then nothing is refused for it (as when Redis is away).
BACKLOG_KEY = "pipeline_backlog"
BACKLOG_TTL_SECONDS = 5


def backlog_report(pending: int) -> None:
    """Store the number of orders waiting behind the API (the relay calls it every half second)."""
    caches["default"].set(BACKLOG_KEY, pending, timeout=BACKLOG_TTL_SECONDS)


def _redis_round(windows: dict[str, int], reads: list[str]) -> tuple[dict[str, tuple[int, float]], dict[str, int]]:
    """Count one request in the current window of each throttle key (key -> window in seconds) and
    read the integer under each of `reads`, in one round trip. Both empty when Redis did not answer."""
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
                for key in reads:
                    pipe.get(cache.make_and_validate_key(key))
                answers = pipe.execute()
            counts, raw = answers[0 : 2 * len(windows) : 2], answers[2 * len(windows) :]
        else:  # a cache in the process's memory (the fast tests): the same counters, call by call
            counts = []
            for key, duration in windows.items():
                cache.add(f"{key}:{slots[key]}", 0, timeout=duration)
                counts.append(cache.incr(f"{key}:{slots[key]}"))
            raw = [cache.get(key) for key in reads]
    except (RedisError, OSError) as exc:
        log.warning("throttle_cache_unavailable", error=repr(exc))
        return {}, {}
    values = {}
    for key, value in zip(reads, raw, strict=True):
        try:
            values[key] = int(value)
        except (TypeError, ValueError):  # absent, or not a count: unknown
            continue
    counted = {
        key: (int(count), (slots[key] + 1) * duration - now)
        for (key, duration), count in zip(windows.items(), counts, strict=True)
    }
    return counted, values


def _request_round(request: "Request", view: "APIView") -> tuple[dict[str, tuple[int, float]], dict[str, int]]:
    """What the view's throttles counted and read for this request; done on the first call only."""
    done = getattr(request, _COUNTS, None)
    if done is None:
        windows, reads = {}, []
        for throttle in view.get_throttles():
            if isinstance(throttle, _WindowCounter) and (key := throttle.counter_key(request, view)) is not None:
                windows[key] = throttle.duration
            elif isinstance(throttle, BacklogThrottle) and throttle.applies(request):
                reads.append(BACKLOG_KEY)
        done = _redis_round(windows, reads) if windows or reads else ({}, {})
        setattr(request, _COUNTS, done)
    return done


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
        counted = _request_round(request, view)[0].get(key)
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


class BacklogThrottle:
    """Refuses new orders while more than `MAX_PENDING_ORDERS` wait behind the API: 503 `overloaded`
    with `Retry-After`, for every client alike, so that the queue between the API and settlement
    stays bounded instead of growing for as long as clients send faster than the exchange settles.
    Only `POST` is held back: reading and cancelling go on. With no count (Redis away, or the relay
    not reporting for `BACKLOG_TTL_SECONDS`), nothing is refused."""

    def applies(self, request: "Request") -> bool:
        return request.method == "POST"

    def allow_request(self, request: "Request", view: "APIView") -> bool:
        if not self.applies(request):
            return True
        pending = _request_round(request, view)[1].get(BACKLOG_KEY)
        if pending is not None and pending >= settings.MAX_PENDING_ORDERS:
            # Here, not at the top: core.errors imports DRF's views, which import this module.
            from core.errors import Overloaded

            raise Overloaded(
                "overloaded",
                f"The exchange is catching up with {pending} orders; no new order is taken until it has.",
            )
        return True

    def wait(self) -> float | None:
        return None
