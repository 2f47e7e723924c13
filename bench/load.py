"""Load from a second process: wrk against a service started with uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from demo_services.stack.servers import ManagedProcess, free_port, port_open, wait_until

ROOT = Path(__file__).resolve().parents[1]
_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


@contextlib.contextmanager
def service(variant: str, env: dict[str, str]) -> Iterator[tuple[str, ManagedProcess]]:
    """``bench.app`` under uvicorn (under ``opentelemetry-instrument`` for the agent); yields its URL."""
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "bench.app:app", "--host", "127.0.0.1", "--port", str(port)]
    uvicorn += ["--log-level", "warning", "--no-access-log"]
    if variant == "agent":
        agent = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
        uvicorn = [str(agent), *uvicorn]
    full_env = {"BENCH_VARIANT": variant, "PYTHONPATH": str(ROOT), **env}
    proc = ManagedProcess(f"bench-{variant}", uvicorn, full_env, workdir=None)
    try:
        wait_until(lambda: proc.check_alive() is None and port_open(port), 60, f"the {variant} service")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.stop()


def wrk(url: str, seconds: float, connections: int = 8) -> dict[str, float]:
    """One wrk run: requests/s, p50 and p99 latency in microseconds, and errors (non-2xx plus socket errors)."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * _UNITS[unit]

    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    total = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_us": percentile("50"), "p99_us": percentile("99"), "errors": errors, "requests": total}


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User plus system CPU time a process (or its thread ``tid``) has used so far."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def waits(pid: int, tid: int) -> int:
    """How many times thread ``tid`` of process ``pid`` has given up its CPU to wait (the kernel's voluntary
    context switches): for a request thread with requests always waiting, mostly waits for the interpreter lock."""
    status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    return int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])


def wrk_with_cpu(url: str, seconds: float, pid: int) -> dict[str, float]:
    """``wrk`` and the CPU the service process ``pid`` spent per request meanwhile: in all, and on its main thread
    (the one that serves requests in a single-process asyncio server; the rest is its background threads). The
    kernel counts both in clock ticks (10 ms), rounded apart: over a short run the main thread's figure can come out
    up to a tick above the total. Also the main thread's waits per request (``waits``): a background thread that
    takes the interpreter lock from it once a request or more shows there."""
    total = cpu_seconds(pid)
    main = cpu_seconds(pid, pid)  # the main thread's id is the process id; read inside the process's window
    main_waits = waits(pid, pid)
    result = wrk(url, seconds)
    main_waits = waits(pid, pid) - main_waits
    main = cpu_seconds(pid, pid) - main
    total = cpu_seconds(pid) - total
    per_request = 1e6 / max(result["requests"], 1)
    result["cpu_us_per_request"] = total * per_request
    result["main_thread_cpu_us_per_request"] = main * per_request
    result["main_thread_waits_per_request"] = main_waits / max(result["requests"], 1)
    return result
