"""Where each Python process of the running exchange spends its interpreter time under load.

    make bench-profile                  # the exchange must be running (`make up`, or after `make bench-e2e`)
    .venv/bin/python benchmarks/stack_profile.py --phase batch --seconds 30

Runs one phase of benchmarks/e2e.py (`--only`) against the running exchange and, while it runs,
samples every Python process of the stack with py-spy: the API's gunicorn workers, the matching
worker, the outbox relay, the settlement consumer and Celery's pool processes. py-spy samples with
`--gil`, so only the thread holding the interpreter counts and waiting on a socket does not: what it
shows is where each process's own CPU goes. For each kind of process it reports the CPU it used over
the window (from /proc, in cores) and how its samples divide between packages, by the function each
sample was running (its file's top-level package), then the heaviest functions, by the share of
samples in which they were on the stack. It writes the tables to `--page` (docs/stack-profile.md).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import e2e  # noqa: E402 - benchmarks/e2e.py, beside this script

# The Python processes of the stack that work under load, as e2e.py names them by their command
# line. The API and Celery are a parent that forks workers, and only the workers handle requests and
# tasks.
SAMPLED = ("api", "engine", "relay", "settlement consumer", "celery (settlement)")
FORKING = {"api", "celery (settlement)"}
KINDS = [(needle, kind) for needle, kind in e2e.PROCESS_KINDS if kind in SAMPLED]


def command_line(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def processes() -> dict[str, list[int]]:
    """The pids of each kind of process; for a forking server, its workers only."""
    found: dict[str, list[int]] = {}
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    for needle, kind in KINDS:
        mine = [pid for pid in pids if needle in command_line(pid) and "py-spy" not in command_line(pid)]
        if kind in FORKING:
            mine = [pid for pid in mine if parent(pid) in mine] or mine
        if mine:
            found[kind] = sorted(mine)
    return found


# The exchange's own top-level packages (and manage.py).
OWN = {entry.name for entry in ROOT.iterdir() if (entry / "__init__.py").exists()} | {"manage"}


def where(frame: str) -> str:
    """`function (path:line)` → the path, relative to the directory on sys.path it was imported
    from (py-spy's raw format gives it so), or from the site-packages it is in."""
    path = frame.rsplit(" (", 1)[-1].rsplit(":", 1)[0]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    return path.removeprefix(str(ROOT) + "/")


def package(frame: str) -> str:
    """The package the frame's function belongs to: one of the exchange's own, the standard
    library, or the installed distribution's top-level package."""
    path = where(frame)
    if path.startswith("<"):
        return "code built at run time (<string>, kafka-python's <codegen_...>)"
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in OWN:
        return f"exchange's own code: {top}"
    if top in sys.stdlib_module_names or path.startswith("/"):
        return "standard library"
    return top


def function(frame: str) -> str:
    return f"{frame.rpartition(' (')[0]} ({where(frame)})"


def spy_command(spy: str, pid: int, seconds: int, rate: int, out: Path) -> list[str]:
    """py-spy sampling `pid` for `seconds`, only the thread holding the interpreter, into `out`."""
    return [spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate), "--gil",
            "--nonblocking", "--format", "raw", "--output", str(out)]  # fmt: skip


def read_samples(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: `frame;frame;...;frame count`, outermost frame first."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples.append((stack.split(";"), int(count)))
    return samples


class Summary:
    """One kind of process's samples: by package and by function running, and the exchange's own
    functions by the share of samples they were on the stack in (its entry points, on the stack in
    nearly every sample, left out)."""

    def __init__(self, samples: list[tuple[list[str], int]], top: int) -> None:
        self.total = sum(count for _, count in samples)
        packages: collections.Counter[str] = collections.Counter()
        running: collections.Counter[str] = collections.Counter()
        ours: collections.Counter[str] = collections.Counter()
        for frames, count in samples:
            packages[package(frames[-1])] += count
            running[function(frames[-1])] += count
            for name in {function(frame) for frame in frames if package(frame).startswith("exchange's")}:
                ours[name] += count
        self.packages = packages.most_common(8)
        self.running = running.most_common(top)
        self.ours = [(name, count) for name, count in ours.most_common() if count < self.total * 0.99][:top]


def drain(stream: IO[bytes]) -> None:
    """Read a pipe to its end, so that the process writing to it never blocks on it."""
    while stream.read1(4096):
        pass


def wait_for_phase(load: subprocess.Popen, phase: str, timeout: float = 300.0) -> bool:
    """Read the load generator's progress (stderr) until the phase's own bar shows."""
    seen = bytearray()
    deadline = time.monotonic() + timeout
    marker = f"\r{phase:<10} [".encode()
    while time.monotonic() < deadline:
        chunk = load.stderr.read1(4096) if load.stderr else b""
        if not chunk:
            return False
        seen += chunk
        if marker in seen:
            threading.Thread(target=drain, args=(load.stderr,), daemon=True).start()
            return True
        del seen[:-64]
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=f"http://127.0.0.1:{os.environ.get('PORT', '8000')}")
    parser.add_argument("--phase", default="orders", choices=["balances", "orders", "batch"])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long py-spy samples, inside the phase")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples a second")
    parser.add_argument("--top", type=int, default=12, help="functions listed for each kind of process")
    parser.add_argument("--page", type=Path, default=ROOT / "docs" / "stack-profile.md")
    args = parser.parse_args()

    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: `make install` installs it from requirements.txt")
    found = processes()
    if "api" not in found:
        raise SystemExit("no exchange is running here: start it with `make up` (or `make bench-e2e`)")

    phase_seconds = args.seconds + 6
    load = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "e2e.py"),
            "--base",
            args.base,
            "--only",
            args.phase,
            f"--{args.phase}-seconds",
            str(phase_seconds),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    print(f"waiting for the {args.phase} phase (the load generator funds its traders first)...", file=sys.stderr)
    if not wait_for_phase(load, args.phase):
        load.kill()
        raise SystemExit(f"the load generator never started its {args.phase} phase")
    time.sleep(2)  # past the phase's first requests

    with tempfile.TemporaryDirectory() as folder:
        spies = []
        for kind, pids in found.items():
            for pid in pids:
                out = Path(folder) / f"{pid}.txt"
                command = spy_command(spy, pid, int(args.seconds), args.rate, out)
                spies.append((kind, out, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
        cpu_before, started = e2e.cpu_seconds(), time.time()
        progress = e2e.Progress("sampling", args.seconds)
        while any(proc.poll() is None for _, _, proc in spies):
            progress.show(f"{sum(proc.poll() is None for _, _, proc in spies)} processes sampled")
            time.sleep(0.5)
        progress.close(f"{len(spies)} processes sampled")
        cpu_after, ended = e2e.cpu_seconds(), time.time()
        samples: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
        for kind, out, proc in spies:
            if proc.returncode != 0 or not out.exists():
                error = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
                raise SystemExit(f"py-spy could not sample a {kind} process: {error}")
            samples[kind] += read_samples(out)
    load.wait(timeout=phase_seconds + 120)
    answer = load.stdout.read().decode(errors="replace") if load.stdout else ""
    try:
        placed = json.loads(answer[answer.index("{") :])[args.phase]
    except (ValueError, KeyError):
        raise SystemExit(f"the load generator did not finish its phase:\n{answer[-2000:]}") from None

    cores = {kind: (cpu_after.get(kind, 0.0) - cpu_before.get(kind, 0.0)) / (ended - started) for kind in found}
    lines = [
        f"Profile of {datetime.now(UTC).isoformat(timespec='seconds')} (`benchmarks/stack_profile.py --phase "
        f"{args.phase} --seconds {args.seconds:g}`), host: {e2e.host()}, 1-minute load average "
        f"{os.getloadavg()[0]:.1f} at the end. The load generator's {args.phase} phase: {placed['per_s']:,} "
        f"requests/s ({placed['orders_per_s']:,} orders/s), p50 / p99 {placed['p50_ms']:,} / {placed['p99_ms']:,} ms. "
        f"py-spy sampled each process {args.rate} times a second with "
        "`--gil` (the thread holding the interpreter), so the shares below are of each process's own CPU.",
        "",
    ]
    for kind in found:
        summary = Summary(samples[kind], args.top)

        def rows(pairs: list[tuple[str, int]], total: int = summary.total) -> list[str]:
            return [f"| `{name}` | {count / total:.0%} |" for name, count in pairs]

        lines += [
            f"### {kind}: {cores[kind]:.2f} of a core, {len(found[kind])} process(es), {summary.total:,} samples",
            "",
            "| package of the function running | share |",
            "| --- | --- |",
            *[row.replace("`", "") for row in rows(summary.packages)],
            "",
            "| function running | share |",
            "| --- | --- |",
            *rows(summary.running),
            "",
            "| the exchange's own function, on the stack | share |",
            "| --- | --- |",
            *rows(summary.ours),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    args.page.write_text(
        "# Where each process of the stack spends its CPU\n\n"
        "Written by `make bench-profile` (`benchmarks/stack_profile.py`); docs/benchmarks.md says what "
        "bounds each figure.\n\n" + text + "\n"
    )
    print(f"written: {args.page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
