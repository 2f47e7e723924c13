"""A stand-in for the parts of Grafana's HTTP API that ``otel-kit grafana push`` uses (Grafana itself cannot run
here): folders, datasources by uid, dashboards by uid, alert-rule provisioning. It answers as Grafana 11 does,
including the fields Grafana adds (ids, versions, provenance), checks the bearer token, and counts writes."""

from __future__ import annotations

import http.server
import json
import re
from typing import Any

from demo_services.stack.servers import InThreadHTTPServer


class GrafanaAPI(InThreadHTTPServer):
    def __init__(self, token: str) -> None:
        self.token = token
        self.folders: dict[str, dict[str, Any]] = {}
        self.datasources: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.rules: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return self._send(401, {"message": "invalid API key"})
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, answer = api.handle(method, self.path, body)
                self._send(status, answer)
                return None

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PUT(self) -> None:
                self._route("PUT")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        not_found = (404, {"message": "not found"})
        if method != "GET":
            self.writes.append(f"{method} {path}")
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            return (200, self.folders[m[1]]) if m[1] in self.folders else not_found
        if path == "/api/folders" and method == "POST":
            self.folders[body["uid"]] = {"id": len(self.folders) + 1, **body}
            return 200, self.folders[body["uid"]]
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            if method == "GET":
                stored = self.datasources.get(m[1])
                return (
                    (200, {"id": 1, "orgId": 1, "readOnly": False, "secureJsonFields": {}, **stored})
                    if stored
                    else not_found
                )
            self.datasources[m[1]] = body
            return 200, {"message": "Datasource updated"}
        if path == "/api/datasources" and method == "POST":
            self.datasources[body["uid"]] = body
            return 200, {"message": "Datasource added", "datasource": body}
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            stored = self.dashboards.get(m[1])
            return (200, {"dashboard": stored, "meta": {"folderUid": "otel-kit"}}) if stored else not_found
        if path == "/api/dashboards/db" and method == "POST":
            board = body["dashboard"]
            version = self.dashboards.get(board["uid"], {}).get("version", 0) + 1
            self.dashboards[board["uid"]] = {**board, "id": 7, "version": version}
            return 200, {"status": "success", "uid": board["uid"], "version": version}
        if m := re.fullmatch(r"/api/v1/provisioning/alert-rules/([\w-]+)", path):
            if method == "GET":
                stored = self.rules.get(m[1])
                return (200, {"id": 3, "orgID": 1, "provenance": "api", **stored}) if stored else not_found
            self.rules[m[1]] = body
            return 200, body
        if path == "/api/v1/provisioning/alert-rules" and method == "POST":
            self.rules[body["uid"]] = body
            return 201, body
        return not_found
