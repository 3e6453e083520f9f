#!/usr/bin/env bash
# Runs the cluster tests (e2e/tests) against a throwaway kind cluster. Needs docker and kind
# (https://kind.sigs.k8s.io); not part of ./scripts/test.sh, which has no cluster.
#   e2e/run.sh          the API server's admission of AnalyticsTenants (CRD schema, CEL)
#   e2e/run.sh --full   also a tenant reconciled to Ready: the operator runs here against the
#                       cluster; SIGHTLINE_KAFKA_BROKERS and SIGHTLINE_CLICKHOUSE_URL must name
#                       a Kafka and a ClickHouse the cluster's pods and this machine reach.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster=sightline-e2e
command -v kind >/dev/null || { echo "kind is required" >&2; exit 1; }
kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
trap 'kind delete cluster --name "$cluster"' EXIT
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"
if [ "${1:-}" = "--full" ]; then
  cargo build --locked --bin sightline
  ./target/debug/sightline operator --namespace default --listen 127.0.0.1:0 &
  operator=$!
  trap 'kill $operator; kind delete cluster --name "$cluster"' EXIT
  cargo test --locked -p sightline-e2e -- --ignored --test-threads 1
else
  cargo test --locked -p sightline-e2e -- --ignored --test-threads 1 the_api_server_refuses_what_the_operator_would
fi
