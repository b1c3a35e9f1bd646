#!/usr/bin/env bash
# The load half of `just bench`: builds Tandem and tandem-bench in release,
# then runs every workload against Tandem (fresh temp data dir) and, when
# Node is present, against the reference @y/websocket-server in the same run.
# Output: a Markdown table on stdout and target/bench/results.json.
# Extra arguments go to `tandem-bench suite` (e.g. --duration 15 --steps 1000,10000).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

cargo build --release -p tandem -p tandem-bench

# 10k idle connections need 10k fds in the server and in the bench.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n)"

reference=()
if command -v node >/dev/null && command -v npm >/dev/null; then
    (cd crates/bench/reference && npm ci --no-audit --no-fund --silent)
    server_js="$root/crates/bench/reference/node_modules/@y/websocket-server/src/server.js"
    reference=(--reference-cmd "HOST=127.0.0.1 PORT={port} node $server_js")
else
    echo "node/npm not found: measuring Tandem only (no reference column)"
fi

mkdir -p "$root/target/bench"
exec "$target/release/tandem-bench" suite \
    --tandem-cmd "RUST_LOG=warn $target/release/tandem serve --listen 127.0.0.1:{port} --data-dir {data}" \
    "${reference[@]}" \
    --out "$root/target/bench/results.json" \
    "$@"
