"""A minimal OTLP receiver: gRPC and HTTP/protobuf, writing each export request as one JSON line.

It answers the three OTLP services exactly as a collector's receiver does (the protobuf service definitions from
``opentelemetry-proto``) and records what arrived, so a test can read back resource attributes, spans, metrics
and logs from a separate process. Run: ``python -m demo_services.stack.otlp_receiver --grpc-port N --http-port M
--out received.jsonl``. It stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import threading
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

_REQUESTS: dict[str, tuple[type[Message], type[Message]]] = {
    "traces": (trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse),
    "metrics": (metrics_service_pb2.ExportMetricsServiceRequest, metrics_service_pb2.ExportMetricsServiceResponse),
    "logs": (logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse),
}


class Recorder:
    """Appends one JSON line per request; safe from many threads."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")

    def record(self, signal_name: str, transport: str, request: Message, path: str = "") -> None:
        entry = {"signal": signal_name, "transport": transport, "body": MessageToDict(request)}
        if path:
            entry["path"] = path  # the HTTP path it was posted to
        line = json.dumps(entry)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def _servicer(base: type, signal_name: str, recorder: Recorder) -> Any:
    response_type = _REQUESTS[signal_name][1]

    class Servicer(base):  # type: ignore[misc, valid-type]
        def Export(self, request: Message, context: grpc.ServicerContext) -> Message:
            recorder.record(signal_name, "grpc", request)
            return response_type()

    return Servicer()


def serve_grpc(port: int, recorder: Recorder, host: str = "127.0.0.1") -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(
        _servicer(trace_service_pb2_grpc.TraceServiceServicer, "traces", recorder), server
    )
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(
        _servicer(metrics_service_pb2_grpc.MetricsServiceServicer, "metrics", recorder), server
    )
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(
        _servicer(logs_service_pb2_grpc.LogsServiceServicer, "logs", recorder), server
    )
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


def serve_http(port: int, recorder: Recorder, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            # the readiness probe Loki and Tempo answer, for what waits on the backend it stands in for
            if self.path != "/ready":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"ready")

        def do_POST(self) -> None:
            # any prefix before /v1/<signal>: Loki, for one, serves OTLP under /otlp/v1/logs
            head, _, signal_name = self.path.rstrip("/").rpartition("/")
            if not head.endswith("/v1") or signal_name not in _REQUESTS:
                self.send_error(404)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            try:
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request_type, response_type = _REQUESTS[signal_name]
                request = request_type()
                request.ParseFromString(body)
            except (OSError, zlib.error, DecodeError):
                self.send_error(400, "malformed OTLP request")
                return
            recorder.record(signal_name, "http", request, self.path)
            payload = response_type().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: every request is in the output file

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="otlp-http", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grpc-port", type=int, default=0, help="0: no gRPC listener")
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the address both listen on")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    recorder = Recorder(args.out)
    grpc_server = serve_grpc(args.grpc_port, recorder, args.host) if args.grpc_port else None
    http_server = serve_http(args.http_port, recorder, args.host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"OTLP receiver: grpc {args.host}:{args.grpc_port or '-'}, http {args.host}:{args.http_port}", flush=True)
    stop.wait()
    http_server.shutdown()
    if grpc_server is not None:
        grpc_server.stop(grace=1).wait()


if __name__ == "__main__":
    main()
