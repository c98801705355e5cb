"""`Idempotency-Key` on the API's money-moving POSTs: a client that is not sure its request arrived
sends it again with the same key and gets the first answer, never a second withdrawal.

The key is claimed by inserting its row in the same transaction as the request's own writes, so two
copies sent at once are serialised by the unique index: the second waits for the first to commit,
then answers what the first answered. A request that fails (any 4xx) leaves no key behind, so it can
be sent again. The same key with another body is a client bug: 422.
"""

import hashlib
import json
from collections.abc import Callable

from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.models import IdempotencyKey
from core.errors import InvalidRequest, Unprocessable

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


def _request_hash(request: Request) -> str:
    canonical = json.dumps(request.data, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent(request: Request, *, scope: str, handle: Callable[[], Response]) -> Response:
    """Answer `request` with `handle()`, or with the stored first answer to the same key."""
    key = request.headers.get(HEADER)
    if key is None:
        return handle()
    if not (1 <= len(key) <= 255 and key.isascii() and key.isprintable()):
        raise InvalidRequest("invalid_idempotency_key", f"{HEADER} must be 1 to 255 printable ASCII characters.")
    digest = _request_hash(request)
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = IdempotencyKey.objects.create(
                    user=request.user, scope=scope, key=key, request_hash=digest, response_status=0, response_body={}
                )
        except IntegrityError:
            record = IdempotencyKey.objects.get(user=request.user, scope=scope, key=key)
            if record.request_hash != digest:
                raise Unprocessable(
                    "idempotency_key_reused", f"This {HEADER} was used with another request body."
                ) from None
            replay = Response(record.response_body, status=record.response_status)
            replay[REPLAYED_HEADER] = "true"
            return replay
        response = handle()
        record.response_status = response.status_code
        record.response_body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
        record.save(update_fields=["response_status", "response_body"])
        return response
