"""benchmarks/stack_profile.py names where a process spends its CPU: it must read py-spy's samples
of a real process, and put each function where it belongs."""

import importlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def profile(monkeypatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when the script runs: its neighbours import
    yield importlib.import_module("stack_profile")


def test_each_frame_is_put_down_to_its_package(profile) -> None:
    # py-spy names a file relative to the sys.path entry it was imported from.
    assert profile.package("send (kafka/producer/kafka.py:943)") == "kafka"
    assert profile.package("orders_place (matching/services.py:617)") == "exchange's own code: matching"
    assert profile.package("<module> (manage.py:14)") == "exchange's own code: manage"
    assert profile.package("select (selectors.py:468)") == "standard library"
    assert profile.package("_worker (concurrent/futures/thread.py:83)") == "standard library"
    assert profile.package("decode (<codegen_decode:produce_response_v9>:77)").startswith("code built at run time")
    site = "/srv/.venv/lib/python3.11/site-packages"
    assert profile.package(f"crc ({site}/kafka/record/_crc32c.py:153)") == "kafka"
    assert profile.function(f"crc ({site}/kafka/record/_crc32c.py:153)") == "crc (kafka/record/_crc32c.py)"
    assert profile.function(f"spin ({ROOT}/busy.py:3)") == "spin (busy.py)"


def test_a_process_busy_in_one_function_is_shown_spending_its_cpu_there(profile, tmp_path) -> None:
    script = tmp_path / "busy.py"
    script.write_text(
        textwrap.dedent(
            """
            import hashlib, threading, time

            def spin():
                while True:
                    hashlib.sha256(b"x" * 100_000).digest()
                    sum(range(10_000))

            def idle():
                while True:
                    time.sleep(1)

            threading.Thread(target=idle, daemon=True).start()
            spin()
            """
        )
    )
    busy = subprocess.Popen([sys.executable, str(script)])
    out = tmp_path / "samples.txt"
    try:
        spy = Path(sys.executable).parent / "py-spy"
        done = subprocess.run(
            profile.spy_command(str(spy), busy.pid, 2, 50, out),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        busy.kill()
        busy.wait()
    assert done.returncode == 0, done.stderr

    summary = profile.Summary(profile.read_samples(out), top=5)
    assert summary.total >= 50
    name, count = summary.running[0]
    assert name.startswith("spin (") and count / summary.total > 0.9
    # The sleeping thread never holds the interpreter: --gil leaves it out.
    assert not any(name.startswith("idle (") for name, _ in summary.running)
    assert sum(count for _, count in summary.packages) == summary.total
