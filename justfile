# Tandem — the commands the README names. `just --list` shows them.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where cargo puts binaries (respects CARGO_TARGET_DIR).
target := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() + "/target")

# List the recipes.
default:
    @just --list

# Build the editor bundle, the release binary, and serve http://127.0.0.1:8080 on ./data.
demo: web
    cargo build --release -p tandem
    @echo ""
    @echo "  Tandem is up: open http://127.0.0.1:8080/d/welcome in two browser windows."
    @echo "  (Ctrl-C stops it; documents stay in ./data.)"
    @echo ""
    {{target}}/release/tandem serve --listen 127.0.0.1:8080 --data-dir ./data

# A demo peer that types into DOC at human speed with its own cursor (next to `just demo`).
typist doc="welcome":
    cargo run --release -p tandem --example typist -- {{doc}}

# Install the editor's npm packages and bundle it into web/dist (embedded by the next cargo build).
web:
    cd web && npm ci --no-audit --no-fund && npm run build

# Every test: Rust unit + integration tests, then the JS interop and browser tests.
test: test-rust interop browser

# Rust tests (store, gateway against the real binary, bench smoke).
test-rust:
    cargo build --workspace --bins
    TANDEM_BIN={{target}}/debug/tandem cargo test --workspace

# A stock yjs + y-websocket client against the real server.
interop:
    cargo build -p tandem
    cd tests/interop && npm ci --no-audit --no-fund
    TANDEM_BIN={{target}}/debug/tandem node --test tests/interop/

# Real Chromium against the real server serving the real editor bundle.
browser: web
    cargo build -p tandem
    cd tests/browser && npm ci --no-audit --no-fund
    TANDEM_BIN={{target}}/debug/tandem node --test tests/browser/

# fmt --check and clippy with warnings denied.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks: store microbenchmarks (criterion), then the load workloads side by side with the reference server, Hocuspocus and y-sweet (ARGS go to `tandem-bench suite`, e.g. --duration 8).
bench *args:
    cargo bench -p tandem-store
    bash crates/bench/run-suite.sh {{args}}
