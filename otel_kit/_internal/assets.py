"""Where the dashboards, datasources, alert rules and CloudWatch queries that the command-line tools push are read.

An installed wheel carries them in ``otel_kit/assets/`` (setup.py copies them there at build time); a checkout of
the repository (an editable install) reads the repository's own folders. ``--dir`` on the command line names
another folder with the same layout (``dashboards/json``, ``dashboards/provisioning/datasources``, ``alerts``,
``cloudwatch/queries``), such as a copy a team has changed.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def assets_root(override: str | None = None) -> Path:
    if override:
        return Path(override)
    packaged = _PACKAGE / "assets"
    return packaged if packaged.is_dir() else _PACKAGE.parent
