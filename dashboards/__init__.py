"""Grafana dashboards as code (grafana-foundation-sdk), rendered to ``dashboards/json/`` by ``python -m dashboards``."""
