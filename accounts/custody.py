"""The exchange's side of custody: who issues deposit addresses, and how custody's word is checked.

Custody (a custody provider, or the exchange's own chain watchers) holds the coins. It tells the
exchange about deposits it has seen and about withdrawals it has sent by calling the custody webhooks
under /api/custody/, each request signed with a shared secret:

    X-Custody-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

A request without a valid signature, or whose `t` is more than the tolerance away from now, is
refused before anything is read from it. Several `v1=` values may be sent (and several secrets
configured) while a secret is being rotated; one match is enough.
"""

import hashlib
import hmac
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

SIGNATURE_HEADER = "X-Custody-Signature"


class SignatureError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(body: bytes, *, secret: str, timestamp: int) -> str:
    """The header custody sends with `body` (the simulator and the tests use it)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def signature_verify(header: str | None, body: bytes, *, secrets: list[str], now: float, tolerance: int) -> None:
    """Raise `SignatureError` unless `header` signs `body` with one of `secrets`, recently."""
    if not header:
        raise SignatureError("missing_signature", f"The {SIGNATURE_HEADER} header is required.")
    timestamp: int | None = None
    given: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            given.append(value)
    if timestamp is None or not given:
        raise SignatureError("bad_signature", f"The {SIGNATURE_HEADER} header must be t=<unix seconds>,v1=<hex>.")
    if abs(now - timestamp) > tolerance:
        raise SignatureError("stale_signature", f"The signature's timestamp is more than {tolerance} s from now.")
    expected = [_mac(secret, timestamp, body) for secret in secrets]
    # Every comparison runs, in constant time, whichever matches.
    matches = [hmac.compare_digest(e, g) for e in expected for g in given]
    if not any(matches):
        raise SignatureError("bad_signature", "The signature does not match the body.")


# --- Deposit addresses ----------------------------------------------------------------------------


class CustodyAdapter(Protocol):
    def address_for(self, *, user_id: int, asset: str) -> str: ...


class DevelopmentCustody:
    """Deterministic fake addresses for development and tests: the same user and asset always get the
    same address, and nobody can guess another user's without the custody secret. No coins can be
    sent to them; the custody simulator plays the chain instead."""

    _BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"

    def address_for(self, *, user_id: int, asset: str) -> str:
        digest = hmac.new(
            settings.CUSTODY_WEBHOOK_SECRETS[0].encode(), f"address:{asset}:{user_id}".encode(), hashlib.sha256
        ).digest()
        if asset == "BTC":
            # Shaped like a regtest bech32 address, which no real wallet would send to by mistake.
            return "bcrt1q" + "".join(self._BECH32[b % 32] for b in digest[:32])
        return "0x" + digest[:20].hex()


def custody_adapter() -> CustodyAdapter:
    return import_string(settings.CUSTODY_ADAPTER)()
