#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs what is missing, then format,
# lint, build, the Rust test suite on the real engine (libchdb), and the tracker's tests in
# headless Chromium. Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh --tests

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== build the sightline binary the integration tests drive"
cargo build --locked --bin sightline
echo "== tests"
profile=default
[ "${CI:-}" = "true" ] && profile=ci
cargo nextest run --workspace --locked --profile "$profile"
echo "== web/: sightline.js build drift and size; tracker and dashboard in a real browser"
(cd web && npm test)
