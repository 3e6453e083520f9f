#!/usr/bin/env bash
# Runs every check and test on a fresh machine: installs what is missing, then format,
# lint, build and the whole test suite on the real engines (libchdb). Used by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

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
