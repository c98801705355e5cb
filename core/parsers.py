"""The API's JSON parser: DRF's, with limits on size and depth.

Its own module, importing nothing that imports `rest_framework.views`: DRF reads
`DEFAULT_PARSER_CLASSES` while that module is being imported.
"""

import json
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers

# How deep a request's JSON may nest: the API's bodies are flat objects, so a body deeper than this is
# no client of this API. The parser refuses it before any view sees it.
JSON_MAX_DEPTH = 32


class RequestTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def _nesting_exceeds(value: object, limit: int) -> bool:
    """Whether `value`'s containers nest more than `limit` deep (a flat object is 1), without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with limits, for every view.

    It reads at most `DATA_UPLOAD_MAX_MEMORY_SIZE` bytes (more is 413 `request_too_large`; DRF's own
    parser reads the stream past Django's limit) and refuses JSON nested deeper than
    `JSON_MAX_DEPTH` (400 `json_too_deep`), which would otherwise exhaust the parser's recursion
    and answer 500.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read() if limit is None else stream.read(limit + 1)
        if limit is not None and len(raw) > limit:
            raise RequestTooLarge(f"The request body is larger than {limit} bytes.")
        too_deep = exceptions.ParseError(f"JSON may nest at most {JSON_MAX_DEPTH} levels deep.", code="json_too_deep")
        try:
            data = json.loads(raw.decode(encoding), parse_constant=_refuse_constant)
        except RecursionError:
            raise too_deep from None
        except ValueError as exc:
            raise parsers.ParseError(f"JSON parse error - {exc}") from None
        if isinstance(data, (dict, list)) and _nesting_exceeds(data, JSON_MAX_DEPTH):
            raise too_deep
        return data


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")
