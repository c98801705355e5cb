"""The `api` line of the Procfile, as a shell runs it (honcho, and any supervisor in production):
gunicorn's settings come out of the environment variables the README documents."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def gunicorn_config(**env: str) -> dict[str, str]:
    """gunicorn's resolved settings for the Procfile's `api` line (`--print-config`: nothing starts)."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("api:"))
    bin_dir = str(Path(sys.executable).parent)
    environ = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PORT": "0", **env}
    for name in ("WEB_ACCESS_LOG", "WEB_KEEPALIVE"):
        if name not in env:
            environ.pop(name, None)
    done = subprocess.run(
        ["sh", "-c", line.removeprefix("api:").strip() + " --print-config"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(re.findall(r"^(\w+)\s+= (.*)$", done.stdout, re.MULTILINE))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "None"), ("-", "-"), ("/var/log/exchange/access.log", "/var/log/exchange/access.log")],
)
def test_gunicorn_writes_a_line_a_request_only_where_web_access_log_says(value, expected):
    # The proxy that terminates TLS in front of gunicorn logs every request; gunicorn's own line
    # cost the API about a tenth of its throughput (docs/decisions.md), so it is asked for.
    config = gunicorn_config(**({} if value is None else {"WEB_ACCESS_LOG": value}))
    assert config["accesslog"] == expected


def test_gunicorn_keeps_idle_connections_as_web_keepalive_says():
    assert gunicorn_config()["keepalive"] == "75"
    assert gunicorn_config(WEB_KEEPALIVE="120")["keepalive"] == "120"
