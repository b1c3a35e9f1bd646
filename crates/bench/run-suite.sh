#!/usr/bin/env bash
# The load half of `just bench`: builds Tandem and tandem-bench in release,
# then runs every workload against Tandem (fresh temp data dir) and, in the
# same run, against each peer that can be set up here:
#   reference          @y/websocket-server (in memory)             needs node + npm
#   hocuspocus         @hocuspocus/server 4.x in memory            needs node + npm
#   hocuspocus-sqlite  the same with @hocuspocus/extension-sqlite  needs node + npm
#   y-sweet            y-sweet 0.9.1, filesystem store             needs cargo (built once)
#   floor              `tandem-bench relay`: forwards, keeps nothing (fan-out points only)
# A peer that cannot be set up is left out, and the script says so.
# Every server listens on 127.0.0.1 only.
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

# npm ci wipes node_modules (and rebuilds better-sqlite3 from source): do
# it only when the lock file changed since the last successful install.
npm_ci() {
    local dir="$1" stamp="$1/node_modules/.tandem-bench-lock"
    if cmp -s "$dir/package-lock.json" "$stamp"; then return 0; fi
    (cd "$dir" && npm ci --no-audit --no-fund --silent --loglevel=error) \
        && cp "$dir/package-lock.json" "$stamp"
}

peers=()
if command -v node >/dev/null && command -v npm >/dev/null; then
    npm_ci crates/bench/reference
    server_js="$root/crates/bench/reference/node_modules/@y/websocket-server/src/server.js"
    peers+=(--reference-cmd "HOST=127.0.0.1 PORT={port} node $server_js")
    # Hocuspocus 4.x declares node >= 22 but runs on 20; its SQLite driver
    # (better-sqlite3 12) builds here. A failed install leaves it out.
    if npm_ci crates/bench/hocuspocus; then
        hp="$root/crates/bench/hocuspocus/server.mjs"
        peers+=(--hocuspocus-cmd "node $hp {port}")
        peers+=(--hocuspocus-sqlite-cmd "node $hp {port} {data}/hocuspocus.sqlite")
    else
        echo "npm ci of crates/bench/hocuspocus failed: measuring without Hocuspocus"
    fi
else
    echo "node/npm not found: measuring without the reference server and Hocuspocus"
fi

# y-sweet is built from its crates.io source once, into target/bench-cache.
ysweet_root="$target/bench-cache/y-sweet"
ysweet="$ysweet_root/bin/y-sweet"
if [[ ! -x "$ysweet" ]]; then
    echo "building y-sweet 0.9.1 from crates.io into $ysweet_root (once; several minutes)"
    nice -n 10 cargo install y-sweet@0.9.1 --locked --root "$ysweet_root" \
        || echo "cargo install y-sweet failed: measuring without y-sweet"
fi
if [[ -x "$ysweet" ]]; then
    # Defaults otherwise (checkpoint every 10 s); --prod only silences the dev banner.
    peers+=(--ysweet-cmd "$ysweet serve {data} --host 127.0.0.1 --port {port} --prod")
fi

# The fan-out floor: what the generator and the kernel cost by themselves.
peers+=(--floor-cmd "$target/release/tandem-bench relay --listen 127.0.0.1:{port}")

mkdir -p "$root/target/bench"
# Tandem's per-connection inbound rate limits (--peer-msgs-per-sec 200,
# --peer-bytes-per-sec 8 MiB) are off here: the throughput workload streams a
# whole trace through one connection as fast as the server takes it, and no
# peer server has such a limit. Everything else runs with its defaults.
exec "$target/release/tandem-bench" suite \
    --tandem-cmd "RUST_LOG=warn $target/release/tandem serve --listen 127.0.0.1:{port} --data-dir {data} --peer-msgs-per-sec 0 --peer-bytes-per-sec 0" \
    "${peers[@]}" \
    --out "$root/target/bench/results.json" \
    "$@"
