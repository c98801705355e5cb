"""Wire formats of every Kafka message, versioned.

Commands travel as `{"v": 1, "type": ..., <command fields>}`. Events travel as
`{"v": 1, "hash": "<hex>", "event": <event.to_dict()>}`. The engine hashes a binary canonical form of
the event's fields, not this JSON; the receiver rebuilds the event with `event_from_dict` and checks
the hash chain on `canonical(event)`, which depends on the field values only, never on how the JSON
was written.
"""

import json
from typing import Any

from matching.engine import Command, Event, command_from_dict, event_from_dict

VERSION = 1


class SchemaError(ValueError):
    """A message that this version of the exchange cannot read."""


def _load(raw: bytes) -> dict[str, Any]:
    try:
        message = json.loads(raw)
    except (TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise SchemaError("message is not a JSON object")
    if message.get("v") != VERSION:
        raise SchemaError(f"unsupported schema version {message.get('v')!r}")
    return message


def encode_command(command: Command) -> bytes:
    return json.dumps({"v": VERSION, **command.to_dict()}, separators=(",", ":")).encode()


def decode_command(raw: bytes) -> Command:
    message = _load(raw)
    del message["v"]
    try:
        return command_from_dict(message)
    except (ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"bad command: {exc}") from exc


def encode_event(event: Event) -> bytes:
    return json.dumps({"v": VERSION, "hash": event.hash, "event": event.to_dict()}, separators=(",", ":")).encode()


def decode_event(raw: bytes) -> Event:
    message = _load(raw)
    body, digest = message.get("event"), message.get("hash")
    if not isinstance(body, dict) or not isinstance(digest, str):
        raise SchemaError("event message needs an 'event' object and a 'hash' string")
    try:
        return event_from_dict(body, digest)
    except (ValueError, TypeError, KeyError) as exc:
        raise SchemaError(f"bad event: {exc}") from exc
