#!/usr/bin/env bash
# Runs Sightline standalone on a fresh machine: installs libchdb if needed, builds the
# release binary and starts it with the example tenant. Extra arguments go to
# `sightline standalone` (e.g. --listen 0.0.0.0:8080 --data /var/lib/sightline).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo build --release --locked --bin sightline
exec ./target/release/sightline standalone --tenants manifests/examples --data ./data "$@"
