"""Real servers on free loopback ports, started from installed packages and always stopped.

Each server is a context manager: it starts the process in its own process group, waits for readiness with a
bounded poll, and on exit stops the whole group (SIGTERM, then SIGKILL after a grace period). Used by the tests'
fixtures and by the local stack runner alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "Alertmanager",
    "InThreadHTTPServer",
    "ManagedProcess",
    "MotoServer",
    "OtlpReceiver",
    "PagerDutyCapture",
    "PostgreSQL",
    "RabbitMQ",
    "ServerError",
    "free_port",
    "serve_asgi",
    "serve_wsgi",
    "wait_until",
]

LOOPBACK = "127.0.0.1"


class ServerError(RuntimeError):
    """A server did not start; the message carries the tail of its output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections (Linux: ``ip_local_port_range``), 32768 if unknown."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_FIRST_CHOSEN_PORT = 10000


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that were free a moment ago, below the range the kernel hands to
    outgoing connections: a port chosen there could be taken by any process's connection before the server binds
    it, or while a test has the server stopped (a broker restarted on its port). They are held open together while
    chosen. Where no such range is left, the kernel chooses (port 0)."""
    import random

    low = _ephemeral_low()
    with contextlib.ExitStack() as stack:
        chosen: list[int] = []
        candidates = list(range(_FIRST_CHOSEN_PORT, low)) if low - _FIRST_CHOSEN_PORT > 100 * count else []
        random.shuffle(candidates)
        for port in candidates:
            if len(chosen) == count:
                break
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
            chosen.append(port)
        while len(chosen) < count:
            sock = stack.enter_context(socket.socket())
            sock.bind((LOOPBACK, 0))
            chosen.append(int(sock.getsockname()[1]))
        return chosen


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass (then raise TimeoutError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


class ManagedProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None, workdir: Path | None = None):
        self.name = name
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"otel-kit-{name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.workdir,
            start_new_session=True,
        )

    def output_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.output_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # children that outlived the leader (same group) are ended too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


class RabbitMQ:
    """A throwaway RabbitMQ node (Debian ``rabbitmq-server``) on free loopback ports, with its own epmd."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.port, self.metrics_port = free_ports(2)
        self.url = f"amqp://guest:guest@{LOOPBACK}:{self.port}/%2F"
        self._timeout = start_timeout
        self._procs: list[ManagedProcess] = []
        self._base = Path(tempfile.mkdtemp(prefix="otel-kit-rabbitmq-"))

    def __enter__(self) -> RabbitMQ:
        # the script itself, not the /usr/sbin wrapper that switches to the rabbitmq user
        server = "/usr/lib/rabbitmq/bin/rabbitmq-server"
        if not Path(server).exists():
            raise ServerError("rabbitmq-server is not installed (Debian package rabbitmq-server); run ./run setup")
        epmd_port, dist_port = free_ports(2)
        self._env: dict[str, str] = {}
        (self._base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {LOOPBACK}:{self.port}\nloopback_users = none\n"
            f"prometheus.tcp.ip = {LOOPBACK}\nprometheus.tcp.port = {self.metrics_port}\n"
        )
        # the Prometheus endpoint (queue depths per queue at /metrics/per-object)
        (self._base / "enabled_plugins").write_text("[rabbitmq_prometheus].\n")
        for sub in ("mnesia", "log"):
            (self._base / sub).mkdir(exist_ok=True)
        env = {
            "HOME": str(self._base),
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": LOOPBACK,
            "RABBITMQ_BASE": str(self._base),
            "RABBITMQ_CONFIG_FILE": str(self._base / "rabbitmq"),
            "RABBITMQ_HOME": str(self._base),
            "RABBITMQ_MNESIA_BASE": str(self._base / "mnesia"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self._base / "feature_flags"),
            "RABBITMQ_LOG_BASE": str(self._base / "log"),
            "RABBITMQ_PID_FILE": str(self._base / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._base / "enabled_plugins"),
            "RABBITMQ_NODENAME": f"otelkit{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self._env = env
        try:
            epmd = ManagedProcess("epmd", ["epmd", "-port", str(epmd_port), "-address", LOOPBACK], env, self._base)
            self._procs.append(epmd)
            wait_until(lambda: epmd.check_alive() is None and port_open(epmd_port), 10, "epmd")
            self.start_node()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_node(self) -> None:
        """Start the broker node (again, after ``stop_node``), on the same port with the same data."""
        node = ManagedProcess("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"], self._env, self._base)
        self._procs.append(node)
        wait_until(lambda: node.check_alive() is None and self._accepts_amqp(), self._timeout, "RabbitMQ")

    def stop_node(self) -> None:
        """Stop the broker node, as an outage would (clients see their connections close)."""
        node = self._procs.pop()
        node.stop()

    def _accepts_amqp(self) -> bool:
        if not port_open(self.port):
            return False
        import pika

        try:
            pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=1")).close()
        except Exception:
            return False
        return True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in reversed(self._procs):
            proc.stop()
        self._procs.clear()
        shutil.rmtree(self._base, ignore_errors=True)


class _ChildServer:
    """A server in a child process, ready when all its ports accept connections."""

    name = "server"
    start_timeout = 30.0
    url = ""
    ready_path = ""  # when set, also wait until GET {url}{ready_path} answers 200

    def __init__(self, ports: list[int], workdir: Path | None = None) -> None:
        self.ports = ports
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"otel-kit-{self.name}-"))
        self._proc: ManagedProcess | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def choose_ports_again(self) -> bool:
        """Pick new free ports for a start that lost one of them to another process; False if it cannot."""
        return False

    def __enter__(self) -> Self:
        for attempt in range(1, 4):
            try:
                self._start()
            except ServerError as err:
                self.__exit__(None, None, None)
                # a port that was free when chosen can be taken before the server binds it (an outgoing
                # connection of any process may get it as its own port): start again on new ones
                if attempt < 3 and "address already in use" in str(err) and self.choose_ports_again():
                    continue
                raise
            except BaseException:
                self.__exit__(None, None, None)
                raise
            return self
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _start(self) -> None:
        self._proc = proc = ManagedProcess(self.name, self.argv(), self.env(), self.workdir)
        wait_until(
            lambda: proc.check_alive() is None and all(port_open(p) for p in self.ports),
            self.start_timeout,
            self.name,
        )
        if self.ready_path:
            wait_until(lambda: _http_ok(self.url + self.ready_path), self.start_timeout, f"{self.name} ready")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.stop(grace=5)
            self._proc = None

    def pid(self) -> int:
        """The process id of the running server."""
        if self._proc is None:
            raise ServerError(f"{self.name} is not running")
        return self._proc.proc.pid

    def kill(self) -> None:
        """SIGKILL the server, as a crash or an OOM kill would: no shutdown, no flush."""
        if self._proc is not None:
            os.killpg(self._proc.proc.pid, signal.SIGKILL)
            self._proc.proc.wait(10)
            self._proc.stop()
            self._proc = None

    def restart(self) -> None:
        """Start again on the same ports with the same configuration and data directory."""
        self.__exit__(None, None, None)
        self.__enter__()


class OtlpReceiver(_ChildServer):
    """The OTLP receiver of ``demo_services.stack.otlp_receiver`` in a child process (gRPC and HTTP ports)."""

    name = "otlp-receiver"

    def __init__(self, grpc_port: int | None = None, http_port: int | None = None) -> None:
        chosen = free_ports(2)
        self.grpc_port, self.http_port = grpc_port or chosen[0], http_port or chosen[1]
        super().__init__([self.grpc_port, self.http_port])
        self.out = self.workdir / "received.jsonl"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "demo_services.stack.otlp_receiver",
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--out",
            str(self.out),
        ]

    def env(self) -> dict[str, str]:
        root = Path(__file__).resolve().parents[2]
        return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}

    def records(self) -> Iterator[dict[str, Any]]:
        """Every request received so far: ``{"signal": "traces"|"metrics"|"logs", "transport": ..., "body": {...}}``."""
        if not self.out.exists():
            return
        for line in self.out.read_text().splitlines():
            if line.strip():
                yield json.loads(line)

    def _items(self, signal: str, resource_key: str, scope_key: str, item_key: str) -> list[tuple[dict[str, Any], Any]]:
        return [
            (attributes(group["resource"].get("attributes", [])), item)
            for r in self.records()
            if r["signal"] == signal
            for group in r["body"].get(resource_key, [])
            for scope in group.get(scope_key, [])
            for item in scope.get(item_key, [])
        ]

    def spans(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, span as OTLP JSON) for every span received."""
        return self._items("traces", "resourceSpans", "scopeSpans", "spans")

    def log_records(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, log record as OTLP JSON) for every log record received."""
        return self._items("logs", "resourceLogs", "scopeLogs", "logRecords")

    def metrics(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(resource attributes, metric as OTLP JSON) for every metric received."""
        return self._items("metrics", "resourceMetrics", "scopeMetrics", "metrics")


def attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP JSON key/value list to a plain dict."""
    return {i["key"]: next(iter(i["value"].values()), None) for i in items}


def hex_id(b64: str) -> str:
    """A trace or span id from OTLP JSON (base64) as lowercase hex."""
    import base64

    return base64.b64decode(b64).hex()


@contextlib.contextmanager
def serve_asgi(app: object, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yields its base URL; stops on exit."""
    import threading

    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOOPBACK, port=port, log_config=None, lifespan="off"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 20, "uvicorn to start")
        if not server.started:
            raise ServerError(f"uvicorn did not start on port {port}")
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def serve_wsgi(app: object, port: int | None = None) -> Iterator[str]:
    """Serve a WSGI app with werkzeug's threaded server on 127.0.0.1; yields its base URL; stops on exit."""
    import threading

    from werkzeug.serving import make_server

    server = make_server(LOOPBACK, port or free_port(), app, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, name=f"werkzeug-{server.port}", daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)


class MotoServer(_ChildServer):
    """AWS APIs from ``moto`` in server mode on a free loopback port (``endpoint_url`` for boto3 clients)."""

    name = "moto"

    def __init__(self) -> None:
        self.port = free_port()
        super().__init__([self.port])
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(self.port)]


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise ServerError("PostgreSQL is not installed (Debian package postgresql); run ./run setup")
    return found[-1].parent


class PostgreSQL(_ChildServer):
    """A throwaway PostgreSQL cluster (Debian ``postgresql``) on a free loopback port, with one database per name.

    Loopback only and thrown away at exit, so it trusts local connections: no password exists to leak. As root,
    the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). fsync is off: test data only.
    """

    name = "postgresql"

    def __init__(self, databases: list[str]) -> None:
        self.port = free_port()
        super().__init__([self.port])
        self.databases = databases
        self._as_postgres: list[str] = []
        if os.getuid() == 0:
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
            self.workdir.chmod(0o755)
            shutil.chown(self.workdir, "postgres", "postgres")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/{database}"

    def argv(self) -> list[str]:
        bindir, data = _postgres_bindir(), self.workdir / "data"
        subprocess.run(
            [*self._as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        return [
            *self._as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.workdir}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ]  # fmt: skip

    def __enter__(self) -> Self:
        super().__enter__()
        import psycopg

        def accepts() -> bool:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=1).close()
            except psycopg.OperationalError:
                return False
            return True

        wait_until(accepts, self.start_timeout, "PostgreSQL to accept connections")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            for database in self.databases:
                conn.execute(f'CREATE DATABASE "{database}"')
        return self


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class Prometheus(_ChildServer):
    """Prometheus from Debian's package with the remote-write receiver and exemplar storage on (stands in for Mimir).

    ``rule_files`` are loaded and evaluated every ``evaluation_interval``; alerts go to ``alertmanager_url``.
    """

    name = "prometheus"
    ready_path = "/-/ready"

    def __init__(
        self,
        rule_files: list[Path] | None = None,
        alertmanager_url: str | None = None,
        evaluation_interval: str = "15s",
        scrape_targets: dict[str, str] | None = None,
    ) -> None:
        """``scrape_targets``: job name to ``host:port`` or ``host:port/metrics/path``."""
        self.port = free_port()
        super().__init__([self.port])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.remote_write_url = f"{self.url}/api/v1/write"
        self.rule_files = rule_files or []
        self.alertmanager_url = alertmanager_url
        self.evaluation_interval = evaluation_interval
        self.scrape_targets = scrape_targets or {}

    def argv(self) -> list[str]:
        config: dict[str, Any] = {
            "global": {"scrape_interval": "5s", "evaluation_interval": self.evaluation_interval},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/" + target.partition("/")[2] if "/" in target else "/metrics",
                    "static_configs": [{"targets": [target.partition("/")[0]]}],
                }
                for job, target in self.scrape_targets.items()
            ],
        }
        if self.alertmanager_url:
            host = self.alertmanager_url.split("://", 1)[1].rstrip("/")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        path = self.workdir / "prometheus.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return [
            shutil.which("prometheus") or "/usr/bin/prometheus",
            f"--config.file={path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--web.enable-remote-write-receiver",
            "--enable-feature=exemplar-storage",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now (``/api/v1/alerts``)."""
        return list(_get_json(f"{self.url}/api/v1/alerts")["data"]["alerts"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant PromQL query."""
        import urllib.parse
        import urllib.request

        body = _get_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        return list(body["data"]["result"])


def _get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class InThreadHTTPServer:
    """An ``http.server`` handler served from a daemon thread on a free loopback port; a context manager."""

    def __init__(self, handler: type[Any]) -> None:
        import http.server
        import threading

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), handler)
        self.port = self._server.server_port
        self.ports = [self.port]
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class PagerDutyCapture(InThreadHTTPServer):
    """A local stand-in for PagerDuty's Events API v2 (``POST /v2/enqueue``), in a thread: it answers as PagerDuty
    does (202 with the dedup key) and keeps every event it got in ``events``."""

    def __init__(self) -> None:
        import http.server

        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                ok = self.path == "/v2/enqueue" and body.get("routing_key") and body.get("event_action")
                if ok:
                    events.append(body)
                answer = {"status": "success", "dedup_key": body.get("dedup_key")} if ok else {"status": "invalid"}
                data = json.dumps(answer).encode()
                self.send_response(202 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://{LOOPBACK}:{self.port}/v2/enqueue"


class Alertmanager(_ChildServer):
    """Alertmanager from Debian's package (``prometheus-alertmanager``) with ``config``, clustering off."""

    name = "alertmanager"
    ready_path = "/-/ready"

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        super().__init__([self.port])
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.config = config
        self._env = env or {}

    def env(self) -> dict[str, str]:
        return self._env

    def argv(self) -> list[str]:
        binary = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
        if not Path(binary).exists():
            raise ServerError("Alertmanager is not installed (Debian package prometheus-alertmanager); run ./run setup")
        return [
            binary,
            f"--config.file={self.config}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--cluster.listen-address=",
        ]

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (``/api/v2/alerts``)."""
        return list(_get_json(f"{self.url}/api/v2/alerts"))


COLLECTOR_DIR = Path(__file__).resolve().parents[2] / "collector"


def collector_binary() -> Path:
    """The project's collector, built from collector/manifest.yaml on first use and cached."""
    env_bin = os.environ.get("OTEL_KIT_COLLECTOR_BIN")
    if env_bin:
        return Path(env_bin)
    result = subprocess.run(
        [str(COLLECTOR_DIR / "build.sh")], check=True, stdout=subprocess.PIPE, text=True, timeout=3000
    )
    return Path(result.stdout.strip().splitlines()[-1])


class Collector(_ChildServer):
    """The otel-kit collector with the base config and ``overlays``, all listen addresses on free loopback ports.

    ``env`` sets the backends' endpoints (``TEMPO_OTLP_ENDPOINT``, ``LOKI_OTLP_ENDPOINT``, ...).
    """

    name = "collector"
    start_timeout = 60.0

    def __init__(self, overlays: list[str | Path], env: dict[str, str] | None = None, storage: Path | None = None):
        super().__init__([])
        self.choose_ports_again()
        self.overlays = [p if Path(p).is_absolute() else COLLECTOR_DIR / "config" / p for p in overlays]
        self.storage = storage or self.workdir / "queue"
        self._env = env or {}

    def choose_ports_again(self) -> bool:
        ports = free_ports(7)
        self.grpc_port, self.http_port, self.health_port, self.metrics_port, self._pprof_port = ports[:5]
        self.xray_udp_port, self._xray_proxy_port = ports[5:]  # the awsxray receiver (aws overlay): UDP, TCP
        self.ports = [self.grpc_port, self.http_port, self.health_port]
        self.endpoint = f"http://{LOOPBACK}:{self.grpc_port}"
        return True

    def env(self) -> dict[str, str]:
        return {
            "OTELCOL_OTLP_GRPC_ENDPOINT": f"{LOOPBACK}:{self.grpc_port}",
            "OTELCOL_OTLP_HTTP_ENDPOINT": f"{LOOPBACK}:{self.http_port}",
            "OTELCOL_HEALTH_ENDPOINT": f"{LOOPBACK}:{self.health_port}",
            "OTELCOL_PPROF_ENDPOINT": f"{LOOPBACK}:{self._pprof_port}",
            "OTELCOL_STORAGE_DIR": str(self.storage),
            "OTELCOL_METRICS_PORT": str(self.metrics_port),
            "OTELCOL_XRAY_UDP_ENDPOINT": f"{LOOPBACK}:{self.xray_udp_port}",
            "OTELCOL_XRAY_PROXY_ENDPOINT": f"{LOOPBACK}:{self._xray_proxy_port}",
            # an AWS exporter without a region would ask the EC2 instance metadata service, off this machine
            "AWS_EC2_METADATA_DISABLED": "true",
            **self._env,
        }

    def argv(self) -> list[str]:
        configs = [COLLECTOR_DIR / "config" / "base.yaml", *self.overlays]
        return [str(collector_binary()), *(arg for c in configs for arg in ("--config", str(c)))]

    def __enter__(self) -> Self:
        super().__enter__()
        wait_until(lambda: _http_ok(f"http://{LOOPBACK}:{self.health_port}/"), self.start_timeout, "collector health")
        return self

    def output(self) -> str:
        return self._proc.output_tail(200) if self._proc else ""
