from datetime import timedelta

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

PROTECTED = [
    ("get", "/api/balances/"),
    ("get", "/api/deposits/"),
    ("post", "/api/deposits/"),
    ("get", "/api/withdrawals/"),
    ("post", "/api/withdrawals/"),
    ("get", "/api/orders/"),
    ("post", "/api/orders/"),
    ("get", "/api/orders/1/"),
    ("delete", "/api/orders/1/"),
    ("get", "/api/trades/"),
    ("post", "/api/auth/logout/"),
]


def test_register_then_token_then_balances(api) -> None:
    created = api.post(
        "/api/auth/register/", {"username": "alice", "password": PASSWORD, "email": "a@example.com"}, format="json"
    )
    assert created.status_code == 201
    assert created.json() == {"id": User.objects.get(username="alice").pk, "username": "alice"}

    tokens = api.post("/api/auth/token/", {"username": "alice", "password": PASSWORD}, format="json")
    assert tokens.status_code == 200
    assert set(tokens.json()) == {"access", "refresh"}

    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.json()['access']}")
    assert api.get("/api/balances/").status_code == 200


def test_register_with_a_taken_username_is_a_conflict(api, make_user) -> None:
    make_user(username="alice")
    answer = api.post(
        "/api/auth/register/", {"username": "alice", "password": PASSWORD, "email": "b@example.com"}, format="json"
    )
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "username_taken"


def test_register_with_a_weak_password_is_refused_with_the_reason(api) -> None:
    answer = api.post("/api/auth/register/", {"username": "bob", "password": "123", "email": "b@x.io"}, format="json")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "weak_password"
    assert any("short" in reason for reason in answer.json()["error"]["fields"]["password"])
    assert not User.objects.filter(username="bob").exists()


def test_token_with_a_wrong_password_is_401(api, make_user) -> None:
    make_user(username="carol")
    answer = api.post("/api/auth/token/", {"username": "carol", "password": "wrong-password"}, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "no_active_account"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_private_endpoint_without_a_token_is_401_json(api, method, path) -> None:
    answer = getattr(api, method)(path, {}, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_private_endpoint_with_an_expired_token_is_401(api, make_user, method, path) -> None:
    token = AccessToken.for_user(make_user())
    token.set_exp(lifetime=-timedelta(seconds=1))
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    answer = getattr(api, method)(path, {}, format="json")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "token_not_valid"


def test_garbage_token_is_401(api) -> None:
    api.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    answer = api.get("/api/balances/")
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "token_not_valid"


def test_refresh_rotates_and_the_old_refresh_token_stops_working(api, make_user) -> None:
    make_user(username="dave")
    first = api.post("/api/auth/token/", {"username": "dave", "password": PASSWORD}, format="json").json()

    rotated = api.post("/api/auth/token/refresh/", {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    assert set(rotated.json()) == {"access", "refresh"}
    assert rotated.json()["refresh"] != first["refresh"]

    again = api.post("/api/auth/token/refresh/", {"refresh": first["refresh"]}, format="json")
    assert again.status_code == 401


def test_logout_blacklists_the_refresh_token(api, make_user) -> None:
    make_user(username="erin")
    tokens = api.post("/api/auth/token/", {"username": "erin", "password": PASSWORD}, format="json").json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    out = api.post("/api/auth/logout/", {"refresh": tokens["refresh"]}, format="json")
    assert out.status_code == 205

    api.credentials()
    refused = api.post("/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refused.status_code == 401


def test_logout_with_someone_elses_refresh_token_is_refused(api, make_user) -> None:
    make_user(username="fay")
    make_user(username="gus")
    fay = api.post("/api/auth/token/", {"username": "fay", "password": PASSWORD}, format="json").json()
    gus = api.post("/api/auth/token/", {"username": "gus", "password": PASSWORD}, format="json").json()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {gus['access']}")

    answer = api.post("/api/auth/logout/", {"refresh": fay["refresh"]}, format="json")
    assert answer.status_code == 400
    api.credentials()
    assert api.post("/api/auth/token/refresh/", {"refresh": fay["refresh"]}, format="json").status_code == 200
