"""Mimir's HTTP paths in front of a Prometheus, so that a Prometheus can stand in for Mimir in a compose run.

    python mimir_front.py PORT PROMETHEUS_HOST:PORT

Listens on every address on PORT and forwards, with the body and the headers that matter:

- ``/api/v1/push`` (Mimir's remote-write path) to Prometheus's ``/api/v1/write``;
- ``/prometheus/...`` (Mimir's Prometheus-compatible API, what Grafana's datasource calls) to ``/...``;
- ``/ready`` (Mimir's readiness) to ``/-/ready``.

Anything else is 404, so a client that calls Mimir on a path Mimir does not serve fails here too.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FORWARDED = ("Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version", "Accept")


def _upstream_path(path: str) -> str | None:
    if path == "/ready":
        return "/-/ready"
    if path == "/api/v1/push":
        return "/api/v1/write"
    if path.startswith("/prometheus/"):
        return path.removeprefix("/prometheus")
    return None


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]

    class Front(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            path = _upstream_path(self.path.split("?", 1)[0])
            if path is None:
                self.send_error(404, "not a path Mimir serves")
                return
            query = self.path.partition("?")[2]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))) if self.command == "POST" else None
            headers = {h: v for h in FORWARDED if (v := self.headers.get(h))}
            url = f"http://{upstream}{path}" + (f"?{query}" if query else "")
            request = urllib.request.Request(url, data=body, headers=headers, method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, payload, kind = response.status, response.read(), response.headers.get("Content-Type")
            except urllib.error.HTTPError as err:
                status, payload, kind = err.code, err.read(), err.headers.get("Content-Type")
            except OSError as err:
                status, payload, kind = 503, str(err).encode(), "text/plain"
            self.send_response(status)
            self.send_header("Content-Type", kind or "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _forward

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("0.0.0.0", port), Front).serve_forever()


if __name__ == "__main__":
    main()
