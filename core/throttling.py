"""DRF's rate limits, kept in Redis, open rather than failing when Redis is away.

A restart of Redis (it keeps nothing on disk) must not turn every request into an error: for the
seconds it takes, requests go through unthrottled, and each is logged.

Requests without a user are counted by the client's address as `core.addresses.client_ip` finds
it (the same address the login lock-out records), never by the raw X-Forwarded-For header, which
the client writes itself.
"""

from typing import TYPE_CHECKING

import structlog
from redis.exceptions import RedisError
from rest_framework import throttling

from core.addresses import client_ip

if TYPE_CHECKING:  # rest_framework.views imports this module through the settings
    from rest_framework.request import Request
    from rest_framework.views import APIView

log = structlog.get_logger(__name__)


class _FailOpen:
    def allow_request(self, request: "Request", view: "APIView") -> bool:
        try:
            return super().allow_request(request, view)
        except (RedisError, OSError) as exc:
            log.warning("throttle_cache_unavailable", error=repr(exc))
            return True

    def get_ident(self, request: "Request") -> str:
        return client_ip(request) or ""


class AnonRateThrottle(_FailOpen, throttling.AnonRateThrottle):
    pass


class UserRateThrottle(_FailOpen, throttling.UserRateThrottle):
    pass


class ScopedRateThrottle(_FailOpen, throttling.ScopedRateThrottle):
    pass
