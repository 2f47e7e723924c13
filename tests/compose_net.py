"""compose-lgtm.yml's services, run here as Compose would run them: each on a host of its own.

There is no Docker engine on this machine, so this module does a container runtime's part with the kernel's own
pieces. It reads the model the real Compose loader made of the file (``compose-config``, compose-go: the output of
``docker compose config --format json``) and, for every service it can run:

- a network namespace with a veth pair on one bridge, and a hosts file (/etc/netns/<ns>/hosts, which
  ``ip netns exec`` binds over /etc/hosts) where every service name resolves to its service's address, as on the
  project's default network;
- a container root (tests/compose_container.py): an overlay of this machine's root with the service's bind mounts,
  named volumes, secrets and what its image holds, its hostname, user, working directory, ``environment`` and
  ``entrypoint``/``command``;
- its ``healthcheck``, run inside the container (``nsenter``) at the declared interval, timeout and retries, and
  ``depends_on``: a service starts once every dependency has started or is healthy, as its condition says;
- its published ports: a forwarder on the declared host address, standing in for docker-proxy, on a free port
  (the file's host ports could be taken on this machine; ``ports[(service, target)]`` says where).

The images' programs come from this machine (IMAGES): the project's collector binary and Python code for the images
this repository builds, Debian's packages for the official images of PostgreSQL, RabbitMQ, Alertmanager and
busybox. Loki, Tempo and Mimir cannot run here (AGPL): OTLP captures listen where the file's Loki and Tempo configs
say, and Prometheus with a path-mapping front (tests/compose_images/mimir_front.py) where Mimir's does. Grafana is
not run. Everything is stopped and every namespace, bridge and directory removed on exit, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from demo_services.stack.servers import ManagedProcess, free_ports

ROOT = Path(__file__).resolve().parents[1]
CONTAINER_INIT = Path(__file__).with_name("compose_container.py")
STAND_INS = Path(__file__).with_name("compose_images")
VENV_BIN = Path(sys.executable).parent
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ComposeRunError(RuntimeError):
    """A service did not start or did not become healthy; the message carries its output."""


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def _seconds(duration: str | None, default: float) -> float:
    """A Compose duration (``5s``, ``1m30s``, ``500ms``) in seconds."""
    if not duration:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|us|h|m|s)", duration))


# --- the model, from the real loader ---------------------------------------------------------------------------

COMPOSE = ROOT / "compose-lgtm.yml"


def compose_config_binary() -> Path:
    """compose-config (tests/compose_config): compose-go, the loader ``docker compose config`` runs on, built once
    and cached. The docker/compose CLI would add a dependency tree many minutes long to build on a fresh machine
    for the same load."""
    built = subprocess.run([str(ROOT / "tests" / "compose_config" / "build.sh")], check=True, text=True,
                           stdout=subprocess.PIPE, timeout=600)  # fmt: skip
    return Path(built.stdout.strip().splitlines()[-1])


def example_env(leave_out: str = "") -> dict[str, str]:
    """``.env.example`` with every empty value filled, as a user's ``.env`` would be (one name left out if asked)."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and name != leave_out:
            values[name] = value or f"{name.lower()}-value-0123456789"
    return values


def load(binary: Path, env: dict[str, str], directory: Path, *profiles: str) -> subprocess.CompletedProcess[str]:
    """The loader's run on compose-lgtm.yml with ``env`` as the ``.env`` file (written to ``directory``), in an
    environment with nothing of this machine's: its JSON model on stdout, or its error on stderr."""
    env_file = directory / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    argv = [str(binary), "-f", str(COMPOSE), "--env-file", str(env_file)]
    argv += [a for p in profiles for a in ("--profile", p)]
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(directory)}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean)


# --- what each image holds, and what on this machine stands in for it --------------------------------------------


@dataclass
class Image:
    """The parts of an image a service's start needs: its entrypoint and default command, environment, user and
    working directory, the files it holds (``binds``: host path -> image path; ``links``; ``owners``: image paths a
    fresh named volume takes the owner of), and files written into the container before it starts."""

    entrypoint: list[str]
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    user: str = "root"
    workdir: str = "/"
    binds: list[tuple[str, str]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    modes: list[tuple[str, str]] = field(default_factory=list)
    stand_in_for_args: bool = False  # a stand-in reads the real image's arguments itself: the command is not appended


def dockerfile_final_stage(path: Path) -> dict[str, Any]:
    """ENV, USER, WORKDIR, ENTRYPOINT, CMD and the COPY lines from the build context of a Dockerfile's last stage."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stage = text[text.rfind("\nFROM ") + 1 :]
    found: dict[str, Any] = {"from": stage.split()[1], "env": {}, "copy": [], "user": "", "workdir": "/"}
    for line in stage.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            found["env"].update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif word in ("USER", "WORKDIR"):
            found[word.lower()] = rest.strip()
        elif word in ("ENTRYPOINT", "CMD"):
            found[word.lower()] = json.loads(rest)
        elif word == "COPY" and "--from" not in rest:
            found["copy"].append([p for p in rest.split() if not p.startswith("--")])
    return found


def _copies(context: Path, built: dict[str, Any]) -> list[tuple[str, str]]:
    """The build context's files at the paths the Dockerfile's COPY lines give them (a directory's content into the
    destination directory, files into a destination ending in /)."""
    found = []
    for *sources, destination in built["copy"]:
        if not destination.startswith("/"):
            destination = f"{built['workdir'].rstrip('/')}/{destination}"
        for source in sources:
            path = context / source.rstrip("/")
            target = destination.rstrip("/")
            if destination.endswith("/") and not path.is_dir():
                target = f"{target}/{path.name}"
            found.append((str(path), target.replace("/./", "/")))
    return found


def _collector_image() -> Image:
    from demo_services.stack.servers import collector_binary

    built = dockerfile_final_stage(ROOT / "collector" / "Dockerfile")
    binds = [(str(collector_binary()), built["entrypoint"][0])]
    binds += _copies(ROOT / "collector", built)
    return Image(
        entrypoint=built["entrypoint"],
        command=built.get("cmd", []),
        env={"PATH": BASE_PATH, **built["env"]},
        user=built["user"] or "root",
        binds=binds,
        owners={built["env"]["OTELCOL_STORAGE_DIR"]: "65532"},  # COPY --chown=65532:65532 /queue ...
    )


def _shop_image() -> Image:
    built = dockerfile_final_stage(ROOT / "demo_services" / "Dockerfile")
    workdir = built["workdir"]
    return Image(
        entrypoint=[],
        env={"PATH": f"{VENV_BIN}:{BASE_PATH}", **built["env"]},
        user=built["user"] or "root",
        workdir=workdir,
        # the code the image copies, and the locked packages it installs (this virtualenv's)
        binds=_copies(ROOT, built),
        # the virtualenv and the interpreter it links to may live under folders only root may enter (/root, a
        # checkout in a mktemp folder): in the container, the image's user may enter them
        modes=_enterable(VENV_BIN, Path(os.path.realpath(VENV_BIN / "python"))),
    )


def _enterable(*paths: Path) -> list[tuple[str, str]]:
    """(folder, mode) for every folder above ``paths`` that others may not enter, with that permission added."""
    found = {}
    for path in paths:
        for folder in path.parents:
            mode = folder.stat().st_mode & 0o7777
            if mode & 0o005 != 0o005:
                found[str(folder)] = oct(mode | 0o055)[2:]
    return sorted(found.items())


def _postgres_image() -> Image:
    return Image(
        entrypoint=["/usr/local/bin/docker-entrypoint.sh"],
        command=["postgres"],
        # the image's LANG is en_US.utf8, which this machine may not have generated: either gives UTF8 databases
        env={"PATH": BASE_PATH, "PGDATA": "/var/lib/postgresql/data", "LANG": "C.UTF-8"},
        binds=[(str(STAND_INS / "postgres-entrypoint.sh"), "/usr/local/bin/docker-entrypoint.sh")],
    )


def _rabbitmq_image() -> Image:
    # the official image's own configuration (docker-library/rabbitmq, 3.13/ubuntu): its 10-defaults.conf, and the
    # plugins it enables, rabbitmq_prometheus in the base image and rabbitmq_management in the -management variant
    return Image(
        entrypoint=["/usr/local/bin/docker-entrypoint.sh"],
        command=["rabbitmq-server"],
        env={"PATH": BASE_PATH, "HOME": "/var/lib/rabbitmq"},
        user="rabbitmq",
        binds=[(str(STAND_INS / "rabbitmq-entrypoint.sh"), "/usr/local/bin/docker-entrypoint.sh")],
        owners={"/var/lib/rabbitmq": "rabbitmq"},
        files={
            "/etc/rabbitmq/conf.d/10-defaults.conf": "loopback_users.guest = false\nlog.console = true\n",
            "/etc/rabbitmq/enabled_plugins": "[rabbitmq_management,rabbitmq_prometheus].\n",
        },
    )


def _alertmanager_image() -> Image:
    return Image(
        entrypoint=["/bin/alertmanager"],
        command=["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"],
        env={"PATH": BASE_PATH},
        user="nobody",
        links=[("/bin/alertmanager", "/usr/bin/prometheus-alertmanager")],
        owners={"/alertmanager": "nobody"},
    )


def _busybox_image() -> Image:
    return Image(entrypoint=[], command=["sh"], env={"PATH": BASE_PATH})  # sh, wget, test, touch, sleep: Debian's


def config_file(service: dict[str, Any]) -> dict[str, Any]:
    """The YAML config a Grafana backend's ``-config.file=`` names, read where the service's bind mount puts it."""
    (flag,) = [a for a in service.get("command") or [] if a.startswith("-config.file=")]
    target = flag.split("=", 1)[1]
    (source,) = [v["source"] for v in service["volumes"] if v["type"] == "bind" and v["target"] == target]
    return dict(yaml.safe_load(Path(source).read_text()))


def _capture(http_port: int, grpc_port: int = 0) -> Image:
    receiver = ROOT / "demo_services" / "stack" / "otlp_receiver.py"
    argv = [sys.executable, str(receiver), "--host", "0.0.0.0", "--http-port", str(http_port)]
    argv += ["--grpc-port", str(grpc_port), "--out", "/capture/received.jsonl"]
    return Image(entrypoint=argv, env={"PATH": BASE_PATH}, stand_in_for_args=True)


def _loki_stand_in(service: dict[str, Any]) -> Image:
    return _capture(int(config_file(service)["server"]["http_listen_port"]))


def _tempo_stand_in(service: dict[str, Any]) -> Image:
    config = config_file(service)
    grpc = config["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    return _capture(int(config["server"]["http_listen_port"]), int(grpc.rsplit(":", 1)[1]))


def _mimir_stand_in(service: dict[str, Any]) -> Image:
    """Prometheus (remote-write receiver on) behind a front that answers on Mimir's port and paths, evaluating the
    rule files the service mounts where Mimir's ruler reads them and alerting the Alertmanager its config names."""
    config = config_file(service)
    rules = [v["target"] for v in service["volumes"] if v["type"] == "bind" and v["target"].endswith(".rules.yml")]
    alertmanager = config["ruler"]["alertmanager_url"].split("://", 1)[1]
    prometheus = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "5s"},
        "rule_files": rules,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
    }
    data = config["common"]["storage"]["filesystem"]["dir"].rsplit("/", 1)[0]
    script = (
        f"prometheus --config.file=/etc/prometheus-stand-in.yml --storage.tsdb.path={data}/prometheus "
        "--web.listen-address=127.0.0.1:9090 --web.enable-remote-write-receiver --enable-feature=exemplar-storage & "
        f"exec {sys.executable} {STAND_INS / 'mimir_front.py'} {config['server']['http_listen_port']} 127.0.0.1:9090"
    )
    return Image(entrypoint=["sh", "-c", script], env={"PATH": BASE_PATH},
                 files={"/etc/prometheus-stand-in.yml": json.dumps(prometheus)}, stand_in_for_args=True)  # fmt: skip


# image name (without tag) -> its stand-in; None: not run here, with the reason
IMAGES: dict[str, Callable[[dict[str, Any]], Image] | str] = {
    "otel-kit-collector": lambda _: _collector_image(),
    "otel-kit-shop": lambda _: _shop_image(),
    "postgres": lambda _: _postgres_image(),
    "rabbitmq": lambda _: _rabbitmq_image(),
    "prom/alertmanager": lambda _: _alertmanager_image(),
    "busybox": lambda _: _busybox_image(),
    "grafana/loki": _loki_stand_in,
    "grafana/tempo": _tempo_stand_in,
    "grafana/mimir": _mimir_stand_in,
    "grafana/grafana": "Grafana is under the AGPL and cannot run here; its provisioning is checked by the tests",
}


def image_of(service: dict[str, Any]) -> Callable[[dict[str, Any]], Image] | str:
    return IMAGES[service["image"].rsplit(":", 1)[0]]


# --- the network ------------------------------------------------------------------------------------------------


class Network:
    """A bridge and one network namespace per host, each with its address and a hosts file naming every host."""

    def __init__(self, names: list[str]) -> None:
        self.tag = secrets.token_hex(2)
        self.bridge = f"okb{self.tag}"
        self.prefix = self._free_subnet()
        self.gateway = f"{self.prefix}.1"
        self.addresses = {name: f"{self.prefix}.{i + 2}" for i, name in enumerate(names)}
        self.namespaces = {name: f"ok{self.tag}-{name}" for name in names}
        self._made: list[Callable[[], None]] = []

    def _free_subnet(self) -> str:
        taken = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
        taken += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
        for _ in range(100):
            prefix = f"10.{secrets.randbelow(50) + 200}.{secrets.randbelow(254) + 1}"
            if f"{prefix}." not in taken:
                return prefix
        raise ComposeRunError("no free 10.x.y.0/24 subnet for the bridge")

    def __enter__(self) -> Self:
        try:
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            self._made.append(lambda: _run("ip", "link", "del", self.bridge))
            _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {n}\n" for n, a in self.addresses.items())
            for i, (name, ns) in enumerate(self.namespaces.items()):
                _run("ip", "netns", "add", ns)
                self._made.append(lambda ns=ns: _run("ip", "netns", "del", ns))
                outside, inside = f"okv{self.tag}{i}", f"okp{self.tag}{i}"
                _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
                _run("ip", "link", "set", inside, "netns", ns)
                _run("ip", "link", "set", outside, "master", self.bridge, "up")
                for args in (("link", "set", inside, "name", "eth0"), ("addr", "add", f"{self.addresses[name]}/24",
                             "dev", "eth0"), ("link", "set", "eth0", "up"), ("link", "set", "lo", "up"),
                             ("route", "add", "default", "via", self.gateway)):  # fmt: skip
                    _run("ip", "-n", ns, *args)
                etc = Path("/etc/netns") / ns
                etc.mkdir(parents=True)
                self._made.append(lambda etc=etc: shutil.rmtree(etc, ignore_errors=True))
                (etc / "hosts").write_text(hosts)
                (etc / "resolv.conf").write_text(f"nameserver {self.gateway}\n")
            self.dns = DnsServer(self.gateway, self.addresses)
            self._made.append(self.dns.close)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def pids(self, name: str) -> list[int]:
        listed = subprocess.run(["ip", "netns", "pids", self.namespaces[name]], capture_output=True, text=True)
        return [int(p) for p in listed.stdout.split()]

    def __exit__(self, *exc: object) -> None:
        for name in self.namespaces:  # what outlived its process group (a daemonized epmd)
            for pid in self.pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        for undo in reversed(self._made):
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                undo()
        self._made.clear()


class DnsServer:
    """Docker's embedded DNS server's part on the project network: A records for the service names, and an empty
    answer for anything else, at once (a resolver that reads DNS before the hosts file, as gRPC's does, would
    otherwise wait out this machine's unreachable name server). Listens on the bridge's address, port 53."""

    def __init__(self, address: str, names: dict[str, str]) -> None:
        self.names = {n.lower(): a for n, a in names.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 53))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, name="dns", daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, client = self.sock.recvfrom(512)
                self.sock.sendto(self.answer(query), client)
            except TimeoutError:
                continue
            except (OSError, ValueError, IndexError):
                if self._stop.is_set():
                    return

    def answer(self, query: bytes) -> bytes:
        """RFC 1035 §4.1: the query's id and question, then one A record for a service name asked for its A."""
        labels, i = [], 12
        while query[i]:
            labels.append(query[i + 1 : i + 1 + query[i]].decode("ascii", "replace"))
            i += 1 + query[i]
        question_end = i + 5
        qtype = int.from_bytes(query[i + 1 : i + 3], "big")
        address = self.names.get(".".join(labels).lower())
        known = address is not None
        answers = b""
        if known and qtype == 1:  # A
            answers = b"\xc0\x0c" + (1).to_bytes(2, "big") + (1).to_bytes(2, "big") + (600).to_bytes(4, "big")
            answers += (4).to_bytes(2, "big") + socket.inet_aton(str(address))
        flags = 0x8180 if known else 0x8183  # a response, recursion available; NXDOMAIN for a name not on the network
        header = query[:2] + flags.to_bytes(2, "big") + (1).to_bytes(2, "big")
        header += (1 if answers else 0).to_bytes(2, "big") + bytes(4)
        return header + query[12:question_end] + answers

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


class PortForwarder:
    """docker-proxy's part: a listener on ``host_ip`` that forwards each connection to ``address:port``."""

    def __init__(self, host_ip: str, host_port: int, address: str, port: int) -> None:
        self.listener = socket.create_server((host_ip, host_port))
        self.target = (address, port)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, name=f"forward-{host_port}", daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)

        def pipe(src: socket.socket, dst: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := src.recv(65536):
                    dst.sendall(data)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join(30)
        upstream.close()
        client.close()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


# --- the services ---------------------------------------------------------------------------------------------


@dataclass
class Container:
    name: str
    service: dict[str, Any]
    image: Image
    env: dict[str, str]
    user: str
    process: ManagedProcess | None = None
    started_at: float = 0.0
    healthy_at: float = 0.0
    failed: str = ""
    health_output: str = ""
    started: threading.Event = field(default_factory=threading.Event)
    healthy: threading.Event = field(default_factory=threading.Event)


class ComposeRun:
    """Every runnable service of ``model`` (the loader's JSON) on its own host; see the module's docstring.

    ``project_env`` is the environment Compose reads secrets from (the ``.env`` values). ``timeout`` bounds the
    whole start. Use as a context manager; ``wait_healthy()`` returns once every service has started and every
    declared health check has passed, in ``depends_on`` order.
    """

    def __init__(self, model: dict[str, Any], project_env: dict[str, str], timeout: float = 240.0) -> None:
        self.model = model
        self.project_env = project_env
        self.timeout = timeout
        self.skipped = {n: r for n, s in model["services"].items() if isinstance(r := image_of(s), str)}
        self.names = [n for n in model["services"] if n not in self.skipped]
        self.network = Network(self.names)
        self.base = Path(tempfile.mkdtemp(prefix="otel-kit-compose-"))
        self.containers: dict[str, Container] = {}
        self.ports: dict[tuple[str, int], tuple[str, int]] = {}  # (service, target) -> (host_ip, host port)
        self.forwarders: list[PortForwarder] = []
        self.t0 = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # the paths a test reads: a capture's file, a named volume's directory
    def capture(self, name: str) -> Path:
        return self.base / name / "capture" / "received.jsonl"

    def volume(self, name: str) -> Path:
        return self.base / "volumes" / name

    def __enter__(self) -> Self:
        try:
            self.network.__enter__()
            for name in self.names:
                self.containers[name] = self._container(name)
            self._publish()
            self.t0 = time.monotonic()
            for name in self.names:
                thread = threading.Thread(target=self._lifecycle, args=(name,), name=f"compose-{name}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _publish(self) -> None:
        """Every published port, bound at once on its declared host address (a free port each)."""
        published = [(n, p) for n in self.names for p in self.model["services"][n].get("ports") or []]
        for (name, port), host_port in zip(published, free_ports(len(published)), strict=True):
            host_ip = port.get("host_ip") or "0.0.0.0"
            self.forwarders.append(PortForwarder(host_ip, host_port, self.network.addresses[name], port["target"]))
            self.ports[(name, int(port["target"]))] = (host_ip, host_port)

    def _container(self, name: str) -> Container:
        service = self.model["services"][name]
        stand_in = image_of(service)
        assert not isinstance(stand_in, str)
        image = stand_in(service)
        env = {**image.env, **{k: v for k, v in (service.get("environment") or {}).items() if v is not None}}
        return Container(name, service, image, env, str(service.get("user") or image.user))

    def _spec(self, c: Container) -> Path:
        home = self.base / c.name
        for sub in ("root", "upper", "work", "capture"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        binds: list[tuple[str, str, bool]] = [(src, dst, True) for src, dst in c.image.binds]
        binds.append((str(home / "capture"), "/capture", False))
        for volume in c.service.get("volumes") or []:
            if volume["type"] == "bind":
                binds.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
            elif volume["type"] == "volume":
                path = self.volume(volume["source"])
                if not path.exists():  # a fresh named volume: the owner of the image's directory
                    path.mkdir(parents=True)
                    if owner := c.image.owners.get(volume["target"]):
                        shutil.chown(path, int(owner) if owner.isdigit() else owner,
                                     int(owner) if owner.isdigit() else None)  # fmt: skip
                binds.append((str(path), volume["target"], False))
        for secret in c.service.get("secrets") or []:
            declared = self.model["secrets"][secret["source"]]
            path = home / "secrets" / secret["source"]
            path.parent.mkdir(exist_ok=True)
            path.write_text(self.project_env.get(declared["environment"], ""))
            path.chmod(0o444)
            binds.append((str(path), secret.get("target") or f"/run/secrets/{secret['source']}", True))
        for target, content in c.image.files.items():  # into the upper layer: the container's own files
            path = home / "upper" / target.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        entrypoint = c.service.get("entrypoint") or c.image.entrypoint
        command = [] if c.image.stand_in_for_args else c.service.get("command") or c.image.command
        spec = {
            "root": str(home / "root"), "upper": str(home / "upper"), "work": str(home / "work"),
            "binds": binds, "links": c.image.links, "modes": c.image.modes, "hostname": c.name,
            "user": c.user, "workdir": c.service.get("working_dir") or c.image.workdir, "env": c.env,
            "argv": [*entrypoint, *command],
        }  # fmt: skip
        path = home / "spec.json"
        path.write_text(json.dumps(spec, indent=1))
        return path

    def _start(self, c: Container) -> None:
        ns = self.network.namespaces[c.name]
        argv = ["ip", "netns", "exec", ns, "unshare", "--mount", "--uts", "--propagation", "private",
                sys.executable, str(CONTAINER_INIT), str(self._spec(c))]  # fmt: skip
        c.process = ManagedProcess(c.name, argv, {}, self.base / c.name)
        c.started_at = time.monotonic() - self.t0

    def health_check(self, c: Container) -> subprocess.CompletedProcess[str]:
        """Run the service's health check in its container, as its user, with its environment."""
        test = c.service["healthcheck"]["test"]
        argv = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        assert c.process is not None
        uid, _, gid = c.user.partition(":")
        who = ["-S", uid, "-G", gid or uid] if uid.isdigit() else []
        if not uid.isdigit() and c.user != "root":
            import pwd

            entry = pwd.getpwnam(c.user)
            who = ["-S", str(entry.pw_uid), "-G", str(entry.pw_gid)]
        timeout = _seconds(c.service["healthcheck"].get("timeout"), 30)
        return subprocess.run(
            ["nsenter", "-t", str(c.process.proc.pid), "-m", "-n", "-u", "-r", "-w", *who, "--", *argv],
            env=c.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def _lifecycle(self, name: str) -> None:
        c = self.containers[name]
        try:
            for dependency, rule in (c.service.get("depends_on") or {}).items():
                other = self.containers.get(dependency)
                if other is None:
                    raise ComposeRunError(f"{name} depends on {dependency}, which does not run here")
                event = other.healthy if rule["condition"] == "service_healthy" else other.started
                while not event.wait(0.2):
                    if self._stop.is_set() or other.failed:
                        raise ComposeRunError(f"{name} did not start: {dependency} {other.failed or 'stopped'}")
            self._start(c)
            c.started.set()
            check = c.service.get("healthcheck")
            if not check or check.get("disable"):
                return
            interval = _seconds(check.get("interval"), 30)
            for _ in range(int(check.get("retries", 3))):
                if self._stop.wait(interval):
                    return
                assert c.process is not None
                if c.process.proc.poll() is not None:
                    raise ComposeRunError(f"{name} exited with {c.process.proc.returncode}")
                try:
                    result = self.health_check(c)
                except subprocess.TimeoutExpired:
                    c.health_output = "health check timed out"
                    continue
                c.health_output = (result.stdout + result.stderr)[-2000:]
                if result.returncode == 0:
                    c.healthy_at = time.monotonic() - self.t0
                    c.healthy.set()
                    return
            raise ComposeRunError(f"{name} stayed unhealthy: {c.health_output}")
        except ComposeRunError as err:
            c.failed = str(err)
        except Exception as err:  # a start that broke (a mount, a port): the run fails naming it
            c.failed = f"{type(err).__name__}: {err}"

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout
        for name, c in self.containers.items():
            waiting_on = c.healthy if c.service.get("healthcheck") else c.started
            while not waiting_on.wait(0.2):
                if c.failed or time.monotonic() > deadline:
                    # the services that failed themselves, with their output, not only those that waited on them
                    causes = [n for n, o in self.containers.items() if o.failed and "did not start:" not in o.failed]
                    shown = "\n".join(f"--- {n}: {self.containers[n].failed}\n{self.output(n)}" for n in causes)
                    raise ComposeRunError(f"{name}: {c.failed or 'not healthy in time'}\n{shown}")

    def output(self, name: str, lines: int = 40) -> str:
        process = self.containers[name].process
        return process.output_tail(lines) if process else "(not started)"

    def memory(self) -> dict[str, int]:
        """Resident memory in bytes of every process in each service's namespace."""
        used = {}
        for name in self.names:
            total = 0
            for pid in self.network.pids(name):
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    if found := re.search(r"VmRSS:\s+(\d+) kB", status):
                        total += int(found[1]) * 1024
            used[name] = total
        return used

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for forwarder in self.forwarders:
            forwarder.close()
        for c in reversed(list(self.containers.values())):
            if c.process is not None:
                c.process.stop(grace=10)
        for thread in self._threads:
            thread.join(10)
        self.network.__exit__(None, None, None)
        shutil.rmtree(self.base, ignore_errors=True)
