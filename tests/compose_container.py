"""Start one compose service's process in a container of its own, made from this machine's root: the second half of
tests/compose_net.py, run inside the service's network namespace (``ip netns exec``, which also gives it a mount
namespace and binds /etc/netns/<name>/hosts and resolv.conf over /etc's) under ``unshare --mount --uts``.

    python compose_container.py SPEC.json

The spec says what a container runtime would set up for the service:

- ``root``, ``upper``, ``work``: the container's root is an overlay of / (this machine's files, read-only below)
  with a private upper layer, so what the service writes, and the image paths made for it, stay in the container;
- ``binds``: ``[source, target, read_only]``, the compose file's bind mounts, named volumes (a directory per
  volume, shared by the services that mount it) and secrets, plus the image's own files (see compose_net.IMAGES);
- ``links``: ``[target, points_to]`` symlinks the image holds (Alertmanager's ``/bin/alertmanager``);
- ``hostname``, ``user`` (a name or uid), ``workdir``, ``env`` and ``argv``.

/proc, /dev and /sys are this machine's. /tmp is not a fresh tmpfs: the programs the images stand in with (this
virtualenv, a checkout) may live under this machine's /tmp, and what the service writes there stays in its upper
layer all the same. Then it chroots, changes to the service's user and
working directory and execs the command: the process a health check later finds by pid (``nsenter``).
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
from pathlib import Path


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _bind(source: str, target: Path, read_only: bool) -> None:
    if Path(source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    _mount("--bind", source, str(target))
    if read_only:
        _mount("-o", "remount,bind,ro", str(target))


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    _mount("--make-rprivate", "/")
    _mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={spec['upper']},workdir={spec['work']}", str(root))
    for fs in ("proc", "dev", "sys"):
        _mount("--rbind", f"/{fs}", str(root / fs))
    for name in ("hosts", "resolv.conf"):  # the namespace's own, bound by ip netns exec
        _mount("--bind", f"/etc/{name}", str(root / "etc" / name))
    for source, target, read_only in spec["binds"]:
        _bind(source, root / target.lstrip("/"), read_only)
    for target, points_to in spec["links"]:
        link = root / target.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(points_to)
    for path, mode in spec.get("modes", []):  # in the upper layer only: this machine's files keep theirs
        os.chmod(root / path.lstrip("/"), int(mode, 8))
    socket.sethostname(spec["hostname"])
    os.chroot(root)
    user = str(spec.get("user") or "root")
    if user.replace(":", "").isdigit():  # uid[:gid] the image knows and this machine may not (65532)
        uid, _, group = user.partition(":")
        uid, gid = int(uid), int(group or uid)
    else:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.chdir(spec.get("workdir") or "/")
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    main(sys.argv[1])
