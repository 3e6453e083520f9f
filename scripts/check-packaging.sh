#!/usr/bin/env bash
# The packaging checks (scripts/test.sh runs them; they need helm, kubernetes-validate and
# hadolint from ./scripts/install-deps.sh --tests):
#   - helm lint --strict, with the default values, with ci/all-values.yaml (every optional
#     part on) and with the e2e cluster's values, which also checks each against
#     values.schema.json;
#   - helm template with each, through kubernetes-validate --strict against Kubernetes 1.33
#     (the oldest API the operator speaks; CRD-typed objects have no schema there, so they
#     are reported and skipped: tests/tests/packaging.rs reads the examples instead);
#   - NOTES.txt renders with each;
#   - the e2e cluster's Kafka and ClickHouse manifests pass kubernetes-validate too;
#   - manifests/install.yaml is what scripts/render-manifests.sh writes now;
#   - hadolint finds nothing in the Dockerfile (at any level, info included).
# (The chart's crds/ against crds/ and the code: tests/tests/packaging.rs and the operator's
# drift test.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/tools-path.sh
chart=charts/sightline
kube_version=1.33.0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for values in default "$chart/ci/all-values.yaml" e2e/cluster/values.yaml; do
  args=()
  [ "$values" = default ] || args=(--values "$values")
  echo "-- values: $values"
  helm lint --strict --quiet "$chart" "${args[@]}"
  helm template sightline "$chart" --namespace sightline --kube-version "$kube_version" \
    --include-crds "${args[@]}" > "$work/rendered.yaml"
  kubernetes-validate --strict --quiet -k "$kube_version" "$work/rendered.yaml"
  # NOTES.txt is rendered only by an install, which needs a cluster: render it through tpl
  # in a copy of the chart, so a template error in it fails here, not at a user's install.
  rm -rf "$work/notes" && mkdir "$work/notes" && cp -r "$chart" "$work/notes/"
  cp "$chart/templates/NOTES.txt" "$work/notes/sightline/notes.txt"
  echo 'notes: {{ tpl (.Files.Get "notes.txt") . | toJson }}' > "$work/notes/sightline/templates/zz-notes.yaml"
  helm template sightline "$work/notes/sightline" --namespace sightline --kube-version "$kube_version" \
    "${args[@]}" --show-only templates/zz-notes.yaml > "$work/notes.yaml"
  python3 -c 'import sys, yaml
notes = yaml.safe_load(open(sys.argv[1]))["notes"]
assert "kubectl apply" in notes and "<no value>" not in notes, notes' "$work/notes.yaml"
done

echo "-- e2e/cluster/deps.yaml"
kubernetes-validate --strict --quiet -k "$kube_version" e2e/cluster/deps.yaml

echo "-- manifests/install.yaml is the chart rendered now"
./scripts/render-manifests.sh "$work/install.yaml" >/dev/null
if ! diff -u manifests/install.yaml "$work/install.yaml"; then
  echo "manifests/install.yaml drifted from charts/sightline: run scripts/render-manifests.sh and commit the result" >&2
  exit 1
fi

echo "-- hadolint Dockerfile"
hadolint --failure-threshold info Dockerfile
