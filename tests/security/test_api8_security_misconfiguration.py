"""API8 Security misconfiguration: the defaults a deployment starts from.

No secret is a constant of the code, production refuses what is only safe on a laptop (debug pages,
demo accounts, missing secrets), `check --deploy` is clean, no password reaches a log, nothing read
back from Redis is unpickled, and `/readyz` says up or down without telling anyone why.
"""

import json
import os
import pathlib
import pickle
import secrets
import stat
import subprocess
import sys

import psycopg
import pytest
from celery.app import app_or_default
from django.core.cache import cache
from kombu.exceptions import ContentDisallowed
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads

from exchange import stack
from tests.e2e.harness import Exchange

ROOT = pathlib.Path(__file__).resolve().parents[2]


def base_environment(run_dir: pathlib.Path) -> dict[str, str]:
    """A bare process environment: nothing of this test run's own settings leaks into it."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", str(run_dir)),
        "DJANGO_SETTINGS_MODULE": "exchange.settings",
        "EXCHANGE_RUN_DIR": str(run_dir),
    }


def production_environment(run_dir: pathlib.Path, **overrides: str) -> dict[str, str]:
    """Every variable production requires, with values that are valid but reach no real service."""
    env = {
        **base_environment(run_dir),
        "EXCHANGE_ENV": "production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "exchange.example.com",
        "DATABASE_URL": "postgres://exchange@db.example.com:5432/exchange",
        "REDIS_URL": "redis://cache.example.com:6379/0",
        "CELERY_BROKER_URL": "redis://cache.example.com:6379/1",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka.example.com:9093",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "exchange-api",
        "KAFKA_SASL_PASSWORD": secrets.token_urlsafe(32),
        "CUSTODY_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        "CUSTODY_ADAPTER": "accounts.custody.DevelopmentCustody",
        "METRICS_TOKEN": secrets.token_urlsafe(32),
    }
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def settings_of(env: dict[str, str], *names: str) -> dict[str, object]:
    """The named settings as a process started with `env` sees them."""
    script = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{n: getattr(settings, n, None) for n in {list(names)!r}}}))"
    )
    done = run([sys.executable, "-c", script], env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


# --- Secrets are made per checkout, never written in the code --------------------------------------


def test_the_development_secret_key_is_generated_per_checkout_and_kept(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    key = settings_of(base_environment(first), "SECRET_KEY")["SECRET_KEY"]

    assert key == settings_of(base_environment(first), "SECRET_KEY")["SECRET_KEY"]
    assert key != settings_of(base_environment(second), "SECRET_KEY")["SECRET_KEY"]
    assert len(key) >= 40
    kept = first / "secret-key"
    assert kept.read_text().strip() == key
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_production_workers_block_in_poll_and_development_ones_sleep(tmp_path) -> None:
    # A Kafka cluster holds an empty fetch, so production's workers wait in `poll`; the development
    # broker answers one at once, and a blocking poll would spin on it.
    kafka = "KAFKA"
    production = settings_of(production_environment(tmp_path / "production"), kafka)[kafka]
    development = settings_of(base_environment(tmp_path / "development"), kafka)[kafka]

    assert (production["POLL_WAIT_MS"], production["CONSUMER"]["fetch_max_wait_ms"]) == (100, 500)
    assert (development["POLL_WAIT_MS"], development["CONSUMER"]["fetch_max_wait_ms"]) == (0, 50)


def test_the_development_metrics_token_is_generated_per_checkout(tmp_path) -> None:
    token = settings_of(base_environment(tmp_path), "METRICS_TOKEN")["METRICS_TOKEN"]
    kept = tmp_path / "metrics-token"
    assert token and kept.read_text().strip() == token
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "METRICS_TOKEN", "CUSTODY_WEBHOOK_SECRET"])
def test_production_refuses_to_start_without_each_secret(tmp_path, missing) -> None:
    done = run([sys.executable, "manage.py", "check"], production_environment(tmp_path, **{missing: None}))
    assert done.returncode != 0
    assert missing in done.stderr
    assert not (tmp_path / "secret-key").exists() and not (tmp_path / "metrics-token").exists()


# --- Production settings ----------------------------------------------------------------------------


def test_debug_is_refused_in_production(tmp_path) -> None:
    done = run([sys.executable, "manage.py", "check"], production_environment(tmp_path, DJANGO_DEBUG="true"))
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr and "DJANGO_DEBUG" in done.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path) -> None:
    done = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_environment(tmp_path)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout


def test_production_sends_a_year_of_hsts_with_subdomains_over_https_only(tmp_path) -> None:
    names = [
        "DEBUG",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_SSL_REDIRECT",
        "SECURE_PROXY_SSL_HEADER",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
    ]
    assert settings_of(production_environment(tmp_path), *names) == {
        "DEBUG": False,
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
    }


def test_a_deployment_that_terminates_tls_itself_can_turn_off_the_proxy_header(tmp_path) -> None:
    env = production_environment(tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="false", DJANGO_SECURE_HSTS_PRELOAD="false")
    assert settings_of(env, "SECURE_PROXY_SSL_HEADER", "SECURE_HSTS_PRELOAD") == {
        "SECURE_PROXY_SSL_HEADER": None,
        "SECURE_HSTS_PRELOAD": False,
    }


# --- Demo data and passwords --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["seed_demo", "seed_staff"])
def test_the_seed_commands_refuse_in_production(tmp_path, command) -> None:
    done = run([sys.executable, "manage.py", command], production_environment(tmp_path))
    assert done.returncode != 0
    assert "refused with EXCHANGE_ENV=production" in done.stderr
    assert not (tmp_path / "staff.txt").exists()


@pytest.mark.services
def test_the_stack_log_names_the_password_file_but_holds_no_password(tmp_path) -> None:
    """What the supervisor writes to .run/stack.log while it prepares a development exchange."""
    exchange = Exchange(tmp_path)
    with psycopg.connect(exchange.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{exchange.db_name}"')
    log_path = tmp_path / "stack.log"
    script = "from exchange import stack; c = stack.Config.from_env(); stack.prepare(c); stack.print_banner(c)"
    try:
        with log_path.open("wb") as log:
            done = subprocess.run(
                [stack.PYTHON, "-c", script],
                cwd=ROOT,
                env=exchange.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
    finally:
        exchange.teardown()
    logged = log_path.read_text()
    assert done.returncode == 0, logged

    staff = tmp_path / "staff.txt"
    passwords = [line.split()[1] for line in staff.read_text().splitlines() if not line.startswith("#")]
    assert len(passwords) == 6
    assert stat.S_IMODE(staff.stat().st_mode) == 0o600
    assert not [password for password in passwords if password in logged]
    assert str(staff) in logged
    token = (tmp_path / "metrics-token").read_text().strip()
    assert token not in logged
    assert str(tmp_path / "metrics-token") in logged


# --- Nothing from Redis is unpickled ------------------------------------------------------------------


class _Trap:
    """Unpickling this creates a file: a stand-in for whatever a crafted payload would run."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.path,))


@pytest.fixture
def raw_redis():
    client = cache._cache.get_client(write=True)
    written: list[str] = []
    yield client, written
    if written:
        client.delete(*written)


@pytest.mark.services
def test_a_pickle_planted_in_the_cache_is_never_unpickled(tmp_path, raw_redis) -> None:
    client, written = raw_redis
    marker = tmp_path / "unpickled"
    key = cache.make_and_validate_key("engine:state")
    client.set(key, pickle.dumps(_Trap(marker)))
    written.append(key)

    read = cache.get("engine:state")
    assert not marker.exists()
    assert read is None
    assert cache.get("engine:state", {"fallback": True}) == {"fallback": True}
    assert cache.get_many(["engine:state"]) == {}
    assert not marker.exists()


@pytest.mark.services
def test_the_cache_stores_json_and_reads_it_back(raw_redis) -> None:
    client, written = raw_redis
    value = {"sequence": 7, "bids": [["100.5", "0.25"]], "asks": []}
    cache.set("depth:H4_TEST", value, timeout=30)
    key = cache.make_and_validate_key("depth:H4_TEST")
    written.append(key)

    assert json.loads(client.get(key)) == value
    assert cache.get("depth:H4_TEST") == value
    cache.set("counter:H4_TEST", 1, timeout=30)
    written.append(cache.make_and_validate_key("counter:H4_TEST"))
    assert cache.incr("counter:H4_TEST", 2) == 3
    assert cache.get("counter:H4_TEST") == 3
    with pytest.raises(TypeError):
        cache.set("depth:H4_TEST", object(), timeout=30)


def test_celery_accepts_json_messages_only() -> None:
    from exchange.celery import app

    assert app is app_or_default(app)
    conf = app.conf
    assert (conf.task_serializer, conf.result_serializer, conf.event_serializer) == ("json", "json", "json")
    assert list(conf.accept_content) == ["json"]
    assert list(conf.result_accept_content) == ["json"]
    content_type, encoding, body = kombu_dumps({"a": 1}, serializer="pickle")
    with pytest.raises(ContentDisallowed):
        kombu_loads(body, content_type, encoding, accept=conf.accept_content)


# --- /readyz says up or down, nothing more -----------------------------------------------------------


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_answers_up_or_down_without_error_text_or_addresses(client, settings) -> None:
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    settings.KAFKA = {**settings.KAFKA, "BOOTSTRAP_SERVERS": ["127.0.0.1:1"]}
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    answer = client.get("/readyz")

    assert answer.status_code == 503
    assert answer.json() == {
        "status": "unavailable",
        "checks": {"database": "up", "kafka": "down", "celery_broker": "down", "cache": "down"},
    }
    body = answer.content.decode()
    for leak in ("127.0.0.1", ":1", "refused", "Error", "redis://"):
        assert leak not in body


@pytest.mark.services
@pytest.mark.django_db
def test_readyz_is_200_when_everything_answers(client) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 200, answer.content
    assert answer.json() == {
        "status": "ready",
        "checks": {"database": "up", "kafka": "up", "celery_broker": "up", "cache": "up"},
    }
