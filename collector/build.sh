#!/usr/bin/env bash
# Build the otel-kit collector from manifest.yaml with the OpenTelemetry Collector Builder (ocb), once.
#
# The binary is cached outside the work tree, keyed by the manifest's hash:
#   ${OTEL_KIT_CACHE:-$XDG_CACHE_HOME/otel-kit}/collector/<sha256 of manifest>/otelcol-kit
# A second run with the same manifest only prints the path. Prints the binary's path on stdout; progress on stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MANIFEST="$HERE/manifest.yaml"
BUILDER_VERSION="v0.152.0"
# go >= 1.26.9 is required by the contrib modules; fetched through the Go module proxy when the local go is older
GO_TOOLCHAIN="go1.26.9"

CACHE="${OTEL_KIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otel-kit}"
KEY="$(cat "$MANIFEST" "$0" | sha256sum | cut -c1-16)"
OUT="$CACHE/collector/$KEY"
BIN="$OUT/otelcol-kit"

if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the collector" >&2; exit 1; }
mkdir -p "$OUT"
export GOTOOLCHAIN="$GO_TOOLCHAIN"
# Some contrib module versions are not in the public checksum database; their hashes are recorded in go.sum.
export GONOSUMDB="github.com/open-telemetry/opentelemetry-collector-contrib"
export GOBIN="$CACHE/bin"
if [ ! -x "$GOBIN/builder-$BUILDER_VERSION" ]; then
  echo "==> installing the collector builder $BUILDER_VERSION" >&2
  go install "go.opentelemetry.io/collector/cmd/builder@$BUILDER_VERSION"
  mv "$GOBIN/builder" "$GOBIN/builder-$BUILDER_VERSION"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
sed "s|output_path: ./_build|output_path: $WORK/src|" "$MANIFEST" >"$WORK/manifest.yaml"
echo "==> building the collector (first time only; about 8 minutes on 2 cores)" >&2
# ocb writes the sources; the modules are resolved and the binary built here. A plain ocb run at v0.152.0 fails in
# its 'go mod tidy' on test-only modules the Go module proxy does not serve (service/telemetry/telemetrytest,
# extension/extensionauth/extensionauthtest, ...); 'tidy -e' records every module that resolves and goes on, and
# the build needs none of the missing ones.
"$GOBIN/builder-$BUILDER_VERSION" --config "$WORK/manifest.yaml" --skip-get-modules --skip-compilation >&2
(
  cd "$WORK/src"
  echo "==> resolving modules" >&2
  go mod tidy -e >&2
  echo "==> compiling" >&2
  CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o otelcol-kit . >&2
)
mv "$WORK/src/otelcol-kit" "$BIN.tmp"
mv "$BIN.tmp" "$BIN"
echo "$BIN"
