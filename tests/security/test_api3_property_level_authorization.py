"""API3:2023 Broken object property level authorization: a client cannot set a property the API does
not take (`status`, `user`, `locked`, `fee`...) by adding it to a body, and a misspelt filter does not
silently widen an answer. Every body and every filtering query string with a field the endpoint does
not know is a 400 `unknown_field` naming it, before anything is read or written.

The endpoints are taken from the OpenAPI schema, so an endpoint added later is checked too."""

import json
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from drf_spectacular.generators import SchemaGenerator

from matching.services import order_place

pytestmark = pytest.mark.django_db

UNKNOWN = "unexpected_field"


def operations() -> Iterator[tuple[str, str, dict]]:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


def takes_body(operation: dict) -> bool:
    return "requestBody" in operation


def takes_query(operation: dict) -> bool:
    return any(p["in"] == "query" for p in operation.get("parameters", []))


BODY_ENDPOINTS = sorted((path, method) for path, method, op in operations() if takes_body(op))
QUERY_ENDPOINTS = sorted((path, method) for path, method, op in operations() if takes_query(op))


def test_the_walk_finds_the_endpoints_that_take_input():
    assert ("/api/orders/", "POST") in BODY_ENDPOINTS
    assert ("/api/auth/token/", "POST") in BODY_ENDPOINTS
    assert ("/api/custody/withdrawals/", "POST") in BODY_ENDPOINTS
    assert ("/api/orders/", "GET") in QUERY_ENDPOINTS
    assert ("/api/orders/", "DELETE") in QUERY_ENDPOINTS
    assert len(BODY_ENDPOINTS) >= 9


@pytest.fixture
def call(btc_usdt, make_user, fund, client_for, custody):
    user = make_user()
    fund(user, "USDT", "1000")
    placed, _ = order_place(
        user=user,
        cid="unknown_field_0001",
        symbol="BTC_USDT",
        side="buy",
        order_type="limit",
        price=Decimal(100),
        quantity=Decimal(1),
    )
    client = client_for(user)

    def send(path: str, method: str, *, body: dict | None = None, query: dict | None = None):
        url = path.replace("{symbol}", "BTC_USDT").replace("{order_id}", str(placed.pk))
        if query:
            url += "?" + urlencode(query)
        if path.startswith("/api/custody/"):
            return custody(url.removeprefix("/api/custody/"), body, method=method)
        return client.generic(method, url, "" if body is None else json.dumps(body), content_type="application/json")

    return send


@pytest.mark.parametrize(
    ("path", "method", "where"),
    [(*endpoint, "body") for endpoint in BODY_ENDPOINTS] + [(*endpoint, "query") for endpoint in QUERY_ENDPOINTS],
)
def test_a_field_the_endpoint_does_not_take_is_refused_in_a_body_or_a_query(call, unchanged, path, method, where):
    with unchanged():
        answer = call(path, method, **{where: {UNKNOWN: "x"}})
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["code"] == "unknown_field"
    assert list(error["fields"]) == [UNKNOWN]


@pytest.mark.parametrize(
    "extra",
    [{"status": "filled"}, {"user": 1}, {"user_id": 1}, {"locked": "0"}, {"fee": "0"}, {"filled": "1"}, {"id": 1}],
)
def test_an_order_cannot_set_properties_the_api_computes(call, unchanged, extra):
    body = {
        "cid": "unknown_field_0002",
        "symbol": "BTC_USDT",
        "side": "Buy",
        "order_type": "Limit",
        "price": "100",
        "quantity": "1",
        **extra,
    }
    with unchanged():
        answer = call("/api/orders/", "POST", body=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unknown_field"
    assert list(answer.json()["error"]["fields"]) == list(extra)


def test_a_deposit_declaration_cannot_set_its_own_status(call, unchanged):
    with unchanged():
        answer = call("/api/deposits/", "POST", body={"asset": "USDT", "amount": "5", "status": "credited"})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "unknown_field")


def test_the_fields_an_endpoint_takes_are_still_accepted(call):
    answer = call("/api/orders/", "GET", query={"symbol": "BTC_USDT", "status": "pending", "limit": "5"})
    assert answer.status_code == 200
    assert len(answer.json()) == 1
