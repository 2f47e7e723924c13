#!/usr/bin/env bash
# Build compose-config (main.go: the Compose loader docker compose is built on) once, cached outside the work tree
# keyed by its sources: ${OTEL_KIT_CACHE:-$XDG_CACHE_HOME/otel-kit}/compose-config/<hash>/compose-config.
# Prints the binary's path; takes seconds (one module, compose-go).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${OTEL_KIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-kit}"
KEY="$(cat "$HERE/main.go" "$HERE/go.mod" "$HERE/go.sum" "$0" | sha256sum | cut -c1-16)"
BIN="$CACHE/compose-config/$KEY/compose-config"
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "go is required to build compose-config" >&2; exit 1; }
  mkdir -p "$(dirname "$BIN")"
  (cd "$HERE" && GOTOOLCHAIN=go1.26.9 CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" . >&2)
  mv "$BIN.tmp" "$BIN"
fi
echo "$BIN"
