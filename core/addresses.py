"""The address a request comes from, for rate limits, login lock-outs and sign-in records alike.

Without proxies it is the connection's. Behind `TRUSTED_PROXY_COUNT` reverse proxies, each of which
appends the address it saw to X-Forwarded-For, the client is the entry that many places from the
right: whatever a client writes into the header itself stays to the left of it, so it can neither
pick its own address nor escape a limit by changing the header.
"""

from django.conf import settings
from django.http import HttpRequest
from python_ipware import IpWare


def client_ip(request: HttpRequest) -> str | None:
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded, _ = IpWare(precedence=("HTTP_X_FORWARDED_FOR",), proxy_count=proxies - 1).get_client_ip(request.META)
        if forwarded is not None:
            return str(forwarded)
    return request.META.get("REMOTE_ADDR")
