"""The whole exchange as real processes, on a database, topics and queues of its own.

The API (gunicorn), the matching worker, the settlement consumer, the outbox relay, a Celery worker,
Celery beat and the custody simulator run exactly as `make run` starts them (the lines of the Procfile, in the
environment `exchange.stack` gives them), against the machine's PostgreSQL, Redis and Kafka broker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
from django.conf import settings
from kafka import KafkaConsumer, TopicPartition

from accounts.custody import SIGNATURE_HEADER, signature_header
from exchange import stack

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "Correct-horse-42"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.2, what: str = "") -> Any:
    """Poll until `check` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or check}; last value: {last!r}")


class Exchange:
    def __init__(
        self, workdir: Path, *, database_server: str | None = None, extra_env: dict[str, str] | None = None
    ) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.workdir = workdir
        base_url = urlsplit(database_server or settings.DATABASE_URL)
        self.db_name = f"exchange_e2e_{run_id}"
        self.database_url = urlunsplit(base_url._replace(path=f"/{self.db_name}"))
        self.admin_url = urlunsplit(base_url._replace(path="/postgres"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "exchange.settings",
            "DATABASE_URL": self.database_url,
            "KAFKA_TOPIC_PREFIX": f"e2e-{run_id}-",
            "CELERY_QUEUE": f"e2e-{run_id}",
            "CACHE_KEY_PREFIX": f"e2e-{run_id}",
            "EXCHANGE_RUN_DIR": str(workdir),
            "PORT": str(self.port),
            "THROTTLE_ANON": "100000/minute",
            "THROTTLE_USER": "100000/minute",
            "THROTTLE_ORDERS": "100000/minute",
            "THROTTLE_AUTH": "100000/minute",
            "ENGINE_SNAPSHOT_SECONDS": "2",
            "SETTLE_SWEEP_SECONDS": "2",
            "WEB_CONCURRENCY": "2",
            **(extra_env or {}),
        }
        for key in ("EXCHANGE_TEST_RUN_ID",):
            self.env.pop(key, None)
        self.kafka_servers = self.env.get("KAFKA_BOOTSTRAP_SERVERS", ",".join(settings.KAFKA["BOOTSTRAP_SERVERS"]))
        self.procs: dict[str, subprocess.Popen] = {}
        self.commands = stack.procfile()
        self.names = stack.process_names(production=False)
        self.http = requests.Session()

    # --- lifecycle --------------------------------------------------------------------------------

    def setup(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        steps = (
            ["migrate", "--noinput", "-v", "0"],
            ["collectstatic", "--noinput", "-v", "0"],
            ["kafka_topics"],
            ["seed_demo"],
        )
        for step in steps:
            self.manage(*step)

    def manage(self, *args: str, env: dict[str, str] | None = None) -> str:
        """Run a management command against this exchange; its output if it worked, else a failure
        that shows what it printed."""
        done = subprocess.run(
            [stack.PYTHON, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env={**self.env, "EXCHANGE_PROCESS": "setup", **(env or {})},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self, *names: str, env: dict[str, str] | None = None) -> None:
        config = stack.Config(database_url=self.database_url, redis_url="", kafka=self.kafka_servers, port=self.port)
        for name in names or self.names:
            log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
            # The Procfile's line, run by a shell as honcho runs it; the shell execs the command, so
            # signals sent to its process group reach the process itself.
            self.procs[name] = subprocess.Popen(
                ["/bin/sh", "-c", self.commands[name]],
                cwd=ROOT,
                env={**stack.process_env(config, self.env), **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if "api" in (names or self.names):
            eventually(lambda: stack.http_ok(f"{self.base}/healthz"), timeout=60, what="the API")

    def signal(self, name: str, sig: int = signal.SIGTERM, *, wait: float = 30.0) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        for name in ("custody", "api", "beat", "celery", "relay", "settlement", "engine"):
            if name in self.procs:
                self.signal(name)

    def teardown(self) -> None:
        self.stop()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [
                    stack.PYTHON,
                    "-c",
                    "import django; django.setup(); from core.kafka import client, topics; "
                    "client.delete_topics(topics.name(t) for t in topics.ALL)",
                ],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                timeout=30,
            )

    @classmethod
    @contextlib.contextmanager
    def running(cls, workdir: Path, *, database_server: str | None = None, **env: str) -> Iterator[Exchange]:
        """A set-up exchange with every process started; its logs are printed if it fails."""
        exchange = cls(workdir, database_server=database_server, extra_env=env)
        try:
            exchange.setup()
            exchange.start()
            yield exchange
        except BaseException:
            print(exchange.logs())
            raise
        finally:
            exchange.teardown()

    @classmethod
    @contextlib.contextmanager
    def engine_only(cls, workdir: Path, **env: str) -> Iterator[Exchange]:
        """A set-up exchange whose tests run the matching worker alone. With no settlement running,
        nothing could tell the worker that an event went missing, so it does not look."""
        exchange = cls(workdir, extra_env={"ENGINE_GAP_REWIND_SECONDS": "0", **env})
        try:
            exchange.setup()
            yield exchange
        finally:
            exchange.teardown()

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-40:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # --- database ---------------------------------------------------------------------------------

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(sql, params).fetchall()

    # --- Kafka ------------------------------------------------------------------------------------

    def topic(self, name: str) -> str:
        return f"{self.env['KAFKA_TOPIC_PREFIX']}{name}"

    def kafka_consumer(self, **options: Any) -> KafkaConsumer:
        return KafkaConsumer(bootstrap_servers=self.kafka_servers, **options)

    def topic_ends(self, name: str) -> dict[int, int]:
        """The next offset of every partition of one of this exchange's topics."""
        consumer = self.kafka_consumer()
        try:
            topic = self.topic(name)
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
        finally:
            consumer.close()

    def read_topic(
        self, name: str, ends: dict[int, int] | None = None, starts: dict[int, int] | None = None
    ) -> list[tuple[int, bytes, bytes]]:
        """(partition, key, value) of every message from `starts` (default: the beginning) up to
        `ends` (default: the current ends), partition by partition in offset order."""
        ends = self.topic_ends(name) if ends is None else ends
        consumer = self.kafka_consumer()
        messages: list[tuple[int, bytes, bytes]] = []
        try:
            for partition, end in ends.items():
                tp = TopicPartition(self.topic(name), partition)
                consumer.assign([tp])
                consumer.seek(tp, (starts or {}).get(partition, 0))
                while consumer.position(tp) < end:
                    for records in consumer.poll(timeout_ms=1000).values():
                        messages.extend((partition, r.key, r.value) for r in records if r.offset < end)
        finally:
            consumer.close()
        return messages

    # --- API --------------------------------------------------------------------------------------

    def custody(self, path: str, body: dict | None = None, *, method: str = "POST") -> requests.Response:
        """Call a custody webhook as custody does, signed with the custody secret."""
        raw = json.dumps(body).encode() if body is not None else b""
        secret = self.env["CUSTODY_WEBHOOK_SECRET"].split(",")[0]
        headers = {
            SIGNATURE_HEADER: signature_header(raw, secret=secret, timestamp=int(time.time())),
            "Content-Type": "application/json",
        }
        return self.http.request(method, f"{self.base}/api/custody/{path}", data=raw, headers=headers)

    def register(self, prefix: str = "trader") -> Trader:
        username = f"{prefix}_{uuid.uuid4().hex[:8]}"
        answer = self.http.post(
            f"{self.base}/api/auth/register/",
            json={"username": username, "password": PASSWORD, "email": f"{username}@example.com"},
        )
        assert answer.status_code == 201, answer.text
        tokens = self.http.post(f"{self.base}/api/auth/token/", json={"username": username, "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        return Trader(self, username, answer.json()["id"], tokens.json()["access"])


class Trader:
    def __init__(self, exchange: Exchange, username: str, user_id: int, access: str, password: str = PASSWORD) -> None:
        self.exchange = exchange
        self.username = username
        self.id = user_id
        self.password = password
        self.headers = {"Authorization": f"Bearer {access}"}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.exchange.base}/api/{path}"
        answer = self.exchange.http.request(method, url, headers=self.headers, **kwargs)
        if answer.status_code == 401 and answer.json()["error"]["code"] == "token_not_valid":
            # What any client does when its access token has expired: log in again, once.
            tokens = self.exchange.http.post(
                f"{self.exchange.base}/api/auth/token/", json={"username": self.username, "password": self.password}
            )
            self.headers = {"Authorization": f"Bearer {tokens.json()['access']}"}
            answer = self.exchange.http.request(method, url, headers=self.headers, **kwargs)
        return answer

    def deposit(self, asset: str, amount: str) -> dict:
        """Declare a deposit, then report it confirmed as custody does (the custody simulator may
        report it too; custody's reports are idempotent), and wait until it is credited."""
        tx_id = f"0x{uuid.uuid4().hex}"
        answer = self.call("POST", "deposits/", json={"asset": asset, "amount": amount, "tx_id": tx_id})
        assert answer.status_code == 201, answer.text
        deposit = answer.json()
        address = self.call("GET", "deposits/address/", params={"asset": asset}).json()["address"]
        reported = self.exchange.custody(
            "deposits/", {"asset": asset, "address": address, "amount": amount, "tx_id": tx_id, "confirmations": 100}
        )
        assert reported.status_code in (200, 201), reported.text
        eventually(
            lambda: (
                {d["id"]: d["status"] for d in self.call("GET", "deposits/").json()}.get(deposit["id"]) == "credited"
            ),
            what=f"deposit {deposit['id']} to be credited",
        )
        return deposit

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        return {
            b["asset"]: (Decimal(b["available"]), Decimal(b["locked"])) for b in self.call("GET", "balances/").json()
        }

    def order(self, **body: Any) -> requests.Response:
        body.setdefault("cid", f"c{uuid.uuid4().hex[:20]}")
        return self.call("POST", "orders/", json=body)

    def get_order(self, order_id: int) -> dict:
        return self.call("GET", f"orders/{order_id}/").json()

    def wait_status(self, order_id: int, *statuses: str, timeout: float = 30.0) -> dict:
        return eventually(
            lambda: (o := self.get_order(order_id))["status"] in statuses and o,
            timeout=timeout,
            what=f"order {order_id} to become {'/'.join(statuses)}",
        )
