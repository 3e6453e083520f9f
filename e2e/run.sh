#!/usr/bin/env bash
# Runs the cluster tests (e2e/tests) against a throwaway kind cluster. Not part of
# ./scripts/test.sh: CI machines have no container engine. Needs docker, kind
# (https://kind.sigs.k8s.io) and kubectl; helm, node, Chromium and web/'s packages come from
# ./scripts/install-deps.sh --tests.
#
#   e2e/run.sh          the API server's admission of AnalyticsTenants and Reprocesses
#                       (CRD schema, CEL: a Reprocess's spec changes only in approvedPlanHash)
#   e2e/run.sh --full   Sightline installed as a platform team would, end to end:
#     1. a real Kafka (one Redpanda broker) and a real ClickHouse (one server) in the
#        cluster (e2e/cluster/deps.yaml);
#     2. the image built from ./Dockerfile and pushed to a registry beside kind (so pods
#        report its repository digest, which Reprocess Jobs run); the chart installed with
#        helm (e2e/cluster/values.yaml), waiting for the operator;
#     3. the admission test, and a tenant reconciled to Ready and collected with its
#        children (e2e/tests/cluster.rs) by the operator in the cluster;
#     4. a tenant applied with kubectl (e2e/cluster/tenant.yaml) until Ready; `helm test`
#        (the operator, and that tenant's query API);
#     5. tokens issued from the tenant's signing Secret with `sightline token issue` (as
#        the chart's NOTES.txt says); a pageview sent by the tracker in Chromium and one by
#        curl with a browser's User-Agent (curl's own is a bot's, stored but not counted);
#        both counted through the query API (e2e/tests/installed.rs);
#     6. a dry-run Reprocess of today, then a forced one, each waited for with
#        `kubectl wait --for=condition=Complete`; the same counts afterwards;
#     7. a Manual Reprocess of 30 days: planned, nothing run until approved with `kubectl
#        sightline reprocess approve`; its Job's pod and the operator's pod killed mid-run;
#        Complete, with every day in the ledger under the approved plan's hash.
# SIGHTLINE_E2E_KEEP=1 keeps the cluster afterwards; E2E_KIND_IMAGE, E2E_REDPANDA_IMAGE and
# E2E_CLICKHOUSE_IMAGE replace the pinned images of the node, Kafka and ClickHouse.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools-path.sh
cluster=sightline-e2e
full=false
[ "${1:-}" = "--full" ] && full=true
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "e2e/run.sh needs $tool" >&2; exit 1; }
  done
}
need kind kubectl
$full && need docker helm node curl

cleanup=()
finish() {
  for step in "${cleanup[@]}"; do eval "$step" || true; done
  if [ "${SIGHTLINE_E2E_KEEP:-}" != 1 ]; then kind delete cluster --name "$cluster"; fi
}
trap finish EXIT
# Kubernetes 1.33: the oldest the operator speaks and the chart's kubeVersion. Its nodes
# look up images of localhost:5001 in the registry container (kind's local registry
# recipe), which --full starts.
registry=sightline-e2e-registry
kind get clusters | grep -qx "$cluster" \
  || kind create cluster --name "$cluster" --image "${E2E_KIND_IMAGE:-kindest/node:v1.33.1}" --wait 120s --config - <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
containerdConfigPatches:
  - |-
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
KIND
export KUBECONFIG
KUBECONFIG=$(mktemp)
kind get kubeconfig --name "$cluster" > "$KUBECONFIG"

if ! $full; then
  cargo test --locked -p sightline-e2e -- --ignored --test-threads 1 the_api_server_refuses_what_the_operator_would
  exit 0
fi

ns=sightline
tenant=e2e-helm
site=e2e.example.com
step() { printf '\n== %s\n' "$*"; }

step "Kafka (Redpanda) and ClickHouse in namespace e2e-deps"
sed -e "s|REDPANDA_IMAGE|${E2E_REDPANDA_IMAGE:-docker.redpanda.com/redpandadata/redpanda:v24.2.7}|" \
    -e "s|CLICKHOUSE_IMAGE|${E2E_CLICKHOUSE_IMAGE:-clickhouse/clickhouse-server:25.8}|" \
    e2e/cluster/deps.yaml | kubectl apply -f -
kubectl -n e2e-deps rollout status deployment/redpanda deployment/clickhouse --timeout=5m

step "the image (Dockerfile, target cluster), pushed to the registry beside kind; the host binary"
if [ "$(docker inspect -f '{{.State.Running}}' "$registry" 2>/dev/null || true)" != true ]; then
  docker run -d --restart=always -p 127.0.0.1:5001:5000 --network bridge --name "$registry" registry:2
fi
docker network connect kind "$registry" 2>/dev/null || true
for node in $(kind get nodes --name "$cluster"); do
  docker exec "$node" mkdir -p /etc/containerd/certs.d/localhost:5001
  printf '[host."http://%s:5000"]\n' "$registry" | docker exec -i "$node" cp /dev/stdin /etc/containerd/certs.d/localhost:5001/hosts.toml
done
if [ "${SIGHTLINE_E2E_KEEP:-}" != 1 ]; then cleanup+=("docker rm -f $registry"); fi
docker build --target cluster -t localhost:5001/sightline:e2e .
docker push localhost:5001/sightline:e2e
cargo build --locked --bin sightline
sightline=${CARGO_TARGET_DIR:-target}/debug/sightline
# The same binary is the kubectl plugin.
plugins=$(mktemp -d)
ln -s "$(realpath "$sightline")" "$plugins/kubectl-sightline"
export PATH="$plugins:$PATH"

step "helm install (the operator, its RBAC, the CRDs)"
helm upgrade --install sightline charts/sightline --namespace "$ns" --create-namespace \
  --values e2e/cluster/values.yaml --wait --timeout 5m
kubectl -n "$ns" get deployment,pods

step "the cluster tests: admission, and a tenant reconciled by the installed operator"
cargo test --locked -p sightline-e2e --test cluster -- --ignored --test-threads 1

step "a tenant, applied with kubectl, until Ready; helm test"
kubectl apply -f e2e/cluster/tenant.yaml
kubectl wait --for=condition=Ready "analyticstenant/$tenant" --timeout=10m
kubectl get tenants
helm test sightline --namespace "$ns" --logs

step "events through the collector: the tracker in Chromium, and curl"
kubectl -n "$ns" port-forward "svc/$tenant-collector" 18080:8080 >/dev/null &
cleanup+=("kill $!")
kubectl -n "$ns" port-forward "svc/$tenant-query" 18081:8081 >/dev/null &
cleanup+=("kill $!")
collector=http://127.0.0.1:18080
query=http://127.0.0.1:18081
for _ in $(seq 30); do
  curl -fsS -o /dev/null "$query/v1/openapi.json" && curl -fsS -o /dev/null "$collector/js/sightline.js" && break
  sleep 1
done
# The chart's NOTES.txt: tokens from the tenant's signing Secret.
SIGHTLINE_SECRET=$(kubectl -n "$ns" get secret "$tenant-signing-key" -o jsonpath='{.data.secret}' | base64 -d)
export SIGHTLINE_SECRET
write_token=$("$sightline" token issue --tenant "$tenant" --site "$site" --scope write --ttl 1h)
read_token=$("$sightline" token issue --tenant "$tenant" --site "$site" --scope read --ttl 1h)
unset SIGHTLINE_SECRET
node e2e/cluster/tracker.mjs "$collector" "$write_token" "$site"
curl -fsS "$collector/v1/collect" -H "Authorization: Bearer $write_token" -H 'Content-Type: application/json' \
  -A 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0' \
  -d "{\"url\": \"https://$site/curl\", \"referrer\": \"https://www.google.com/\"}"
echo
# Two user agents from one address (the port-forward's): two visitors, two pageviews.
export SIGHTLINE_E2E_QUERY_URL=$query SIGHTLINE_E2E_READ_TOKEN=$read_token SIGHTLINE_E2E_SITE=$site
export SIGHTLINE_E2E_VISITORS=2 SIGHTLINE_E2E_PAGEVIEWS=2
cargo test --locked -p sightline-e2e --test installed -- --ignored

# Applies Reprocess NAME of the tenant for the days [FROM, TO), each further argument one
# more line of its spec ("force: true").
apply_reprocess() {
  kubectl -n "$ns" apply -f - <<YAML
apiVersion: sightline.dev/v1alpha1
kind: Reprocess
metadata:
  name: $1
spec:
  tenantRef: $tenant
  from: "$2"
  to: "$3"
$(printf '  %s\n' "${@:4}")
YAML
}

step "Reprocess today's day: a dry run, then the replay (forced: the day still takes events)"
from=$(date -u +%F)
to=$(date -u -d tomorrow +%F)
for run in e2e-replay-dry-run:true e2e-replay:false; do
  name=${run%%:*}
  apply_reprocess "$name" "$from" "$to" "dryRun: ${run##*:}" "force: true"
  kubectl -n "$ns" wait --for=condition=Complete "reprocess/$name" --timeout=10m
  kubectl -n "$ns" get reprocess "$name"
done
# A replay reproduces what live loading stored.
cargo test --locked -p sightline-e2e --test installed -- --ignored

step "a Manual Reprocess: planned, approved with kubectl sightline, pods killed mid-run, Complete"
name=e2e-manual
apply_reprocess "$name" "$(date -u -d '29 days ago' +%F)" "$(date -u -d tomorrow +%F)" "force: true" "approval: Manual"
jsonpath() { kubectl -n "$ns" get reprocess "$name" -o jsonpath="$1"; }
for _ in $(seq 60); do [ -n "$(jsonpath '{.status.plan.hash}')" ] && break; sleep 2; done
kubectl sightline reprocess plan "$name" -n "$ns"
[ "$(jsonpath '{.status.conditions[?(@.type=="Approved")].reason}')" = AwaitingApproval ] \
  || { echo "expected Approved=False, AwaitingApproval" >&2; exit 1; }
sleep 5
[ -z "$(kubectl -n "$ns" get jobs -l "sightline.dev/reprocess=$name" -o name)" ] \
  || { echo "a Job runs before approval" >&2; exit 1; }
reviewed=$(jsonpath '{.status.plan.hash}')
kubectl sightline reprocess approve "$name" -n "$ns" --hash "$reviewed"
hash=$(jsonpath '{.spec.approvedPlanHash}')
[ "$hash" = "$reviewed" ] || { echo "approved $hash, not the reviewed $reviewed" >&2; exit 1; }
# The Job runs the image by digest.
for _ in $(seq 60); do kubectl -n "$ns" get job "$name-replay" >/dev/null 2>&1 && break; sleep 2; done
kubectl -n "$ns" get job "$name-replay" -o jsonpath='{.spec.template.spec.containers[0].image}' | grep -q '@sha256:' \
  || { echo "the Job's image is not pinned by digest" >&2; exit 1; }
# Mid-run: a day recorded, days left.
for _ in $(seq 300); do
  done_days=$(jsonpath '{.status.progress.daysSucceeded}')
  [ "${done_days:-0}" -ge 1 ] && break
  sleep 1
done
jsonpath '{.status.progress}'; echo
kubectl -n "$ns" delete pod -l "sightline.dev/reprocess=$name" --grace-period=0 --force --wait=false
kubectl -n "$ns" delete pod -l app.kubernetes.io/component=operator --grace-period=0 --force --wait=false
kubectl -n "$ns" rollout status deployment/sightline-operator --timeout=5m
# The Job's next pod resumes (waiting out the killed pod's day lease, 5 minutes at most).
kubectl -n "$ns" wait --for=condition=Complete "reprocess/$name" --timeout=20m
kubectl -n "$ns" get reprocess "$name"
[ "$(jsonpath '{.status.progress.daysSucceeded}')" = 30 ] || { echo "not every day done" >&2; exit 1; }
for h in $(jsonpath '{.status.checkpoint.ledger[*].planHash}'); do
  [ "$h" = "$hash" ] || { echo "a day swapped under plan $h, not the approved $hash" >&2; exit 1; }
done
kubectl sightline reprocess cancel "$name" -n "$ns"
step "done"
