"""The wheel carries what ``otel-kit grafana push`` and ``otel-kit cloudwatch push`` push: the dashboards, the
Grafana datasources, the alert rules and the CloudWatch Logs Insights queries, copied at build time from the
repository's own folders into ``otel_kit/assets/`` (same layout), so one copy of each file is kept."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# folder -> the files of it the tools read (otel_kit/_internal/assets.py)
ASSETS = {
    "dashboards/json": "*.json",
    "dashboards/provisioning/datasources": "*.yaml",
    "alerts": "*.rules.yml",
    "cloudwatch/queries": "*.query",
}


class BuildWithAssets(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "otel_kit" / "assets"
        for folder, pattern in ASSETS.items():
            files = sorted((ROOT / folder).glob(pattern))
            if not files:
                raise SystemExit(f"no {pattern} under {folder}: the wheel would ship without them")
            (target / folder).mkdir(parents=True, exist_ok=True)
            for path in files:
                shutil.copyfile(path, target / folder / path.name)


setup(cmdclass={"build_py": BuildWithAssets})
