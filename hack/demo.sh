#!/usr/bin/env bash
# `make demo`: the main job, end to end.
#   1. a Kubernetes cluster: the local one (started here) unless KUBECONFIG points at your own;
#   2. the operator, installed with its Helm chart (it runs in-cluster with the chart's RBAC);
#   3. the churn example: synthetic data, XGBoost trained, exported to ONNX, packed as bundle v1;
#   4. a model store the pods can reach (an HTTP server on the pod network's host address);
#   5. a ModelDeployment applied, waited for with `kubectl wait --for=condition=Ready`;
#   6. real predictions sent to the serving pods, printed with the model version that answered;
#   7. live traffic through the router while v2 is rolled out as a canary and promoted step by step,
#      then the bad v3, rolled back automatically by the analysis (prediction-score shift), with why;
#   8. an A/B of v2 and v3 on half the users each, judged by the labels that arrive later (the label
#      joiner of spec.effectiveness): the verdict per arm with its confidence interval;
#   9. every pod, and the node it runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
bin=${MODELDEPLOY_CACHE:-$HOME/.cache/modeldeploy}/bin
export PATH="$bin:$repo/.venv/bin:$PATH"
out=$repo/out/churn
namespace=${DEMO_NAMESPACE:-modeldeploy-demo}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ -z "${KUBECONFIG:-}" ]]; then
  if [[ -z "${MODELDEPLOY_CLUSTER_LOCK_HELD:-}" ]]; then
    # The local cluster is one per machine: wait for a test session that is using it (as pytest does).
    exec {cluster_lock}>>"${MODELDEPLOY_CLUSTER_LOCK:-/tmp/modeldeploy-cluster.lock}"
    flock -n "$cluster_lock" || { say "waiting for a test session to release the local cluster"; flock "$cluster_lock"; }
    say "starting the local Kubernetes control plane"
    modeldeploy-cluster up
  fi  # else a test session holds the cluster, up, and may be using it: never restart it here
  export KUBECONFIG=${MODELDEPLOY_CLUSTER_DIR:-/tmp/modeldeploy-cluster}/admin.kubeconfig
  local_cluster=1
else
  say "using your cluster: KUBECONFIG=$KUBECONFIG"
  local_cluster=0
fi
kubectl get nodes

image_values=()
if [[ $local_cluster == 1 ]]; then
  # Every pod runs on the cluster's real node (kubelet, containerd, runc) from images built from this
  # checkout and pushed to the cluster's own registry, as `make images REGISTRY=...` does for yours.
  registry=$(python -c 'from modeldeploy_testcluster.layout import default_layout; print(default_layout().registry)')
  say "building the serving and operator images (buildah) and pushing them to the cluster's registry $registry"
  REGISTRY=$registry EXPORT=0 hack/images.sh
  image_values=(--set "image.registry=$registry" --set image.pullPolicy=Always)
elif [[ -n "${DEMO_IMAGE_REGISTRY:-}" ]]; then
  image_values=(--set "image.registry=$DEMO_IMAGE_REGISTRY")
fi

say "installing the operator with Helm"
# DEMO_HELM_VALUES: a values file of yours (the test suite passes the values its operator runs with, so
# the demo's upgrade changes nothing under the tests running beside it).
values_file=()
[[ -n "${DEMO_HELM_VALUES:-}" ]] && values_file=(--values "$DEMO_HELM_VALUES")
# Under a test session, one helm operation on the release at a time (the session's own installs take
# this lock too).
install_lock=()
[[ -n "${MODELDEPLOY_CLUSTER_LOCK_HELD:-}" ]] && install_lock=(flock "${MODELDEPLOY_CLUSTER_LOCK:-/tmp/modeldeploy-cluster.lock}.install")
"${install_lock[@]}" helm upgrade --install modeldeploy charts/modeldeploy --namespace modeldeploy-system \
  --create-namespace --wait --timeout 5m "${image_values[@]}" "${values_file[@]}"
kubectl -n modeldeploy-system get pods -o wide

say "generating the churn data set, training v1..v3, packing the bundles"
python examples/churn/make_models.py --out "$out"

if [[ $local_cluster == 1 ]]; then
  say "serving the bundles over HTTP on the pod network"
  model_base=$(python -m modeldeploy_testcluster.demo_store "$out")
else
  model_base=${DEMO_MODEL_BASE_URI:?set DEMO_MODEL_BASE_URI to where $out is uploaded (s3://bucket/churn, https://...)}
fi
sha=$(sha256sum "$out/v1/manifest.json" | cut -d' ' -f1)

say "applying ModelDeployment churn (model v1, 2 replicas) in namespace $namespace"
kubectl create namespace "$namespace" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl delete -n "$namespace" modeldeployment churn churn-ab --ignore-not-found --wait >/dev/null  # start afresh
kubectl apply -n "$namespace" -f - <<YAML
apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata:
  name: churn
spec:
  model:
    uri: $model_base/v1
    format: onnx
    version: "1"
    sha256: "$sha"
  replicas: 2
  traffic:
    stickyKey: {header: X-User-Id}      # the same user always lands on the same arm
  rollout:
    strategy: Canary
    steps:
      - setWeight: 20
      - pause: {duration: 10s}
      - setWeight: 50
      - analysis: {duration: 16s}
    analysis:
      interval: 8s
      minSamples: 20
      failureLimit: 0
      checks:
        - {name: error-rate, type: errorRate, threshold: {max: 0.02}}
        - {name: p99-latency, type: latencyP99, threshold: {max: 0.5}}
        # PSI of a few seconds of scores is noisy: judge it on 150 scores or more (a clearly shifted
        # canary fails sooner: docs/analysis.md, "Failing before minSamples").
        - {name: score-shift, type: predictionShift, threshold: {max: 1.0}, minSamples: 150}
    scaleDownDelaySeconds: 10
  drift: {windowRows: 100, windowSeconds: 10}
YAML
kubectl wait -n "$namespace" --for=condition=Ready modeldeployment/churn --timeout=5m
kubectl get -n "$namespace" modeldeployment,deployment,pods -o wide

say "calling the Service churn from this machine: kubectl port-forward on 127.0.0.1"
# As with any remote cluster: the ModelDeployment's Service (its router) forwarded to a local port.
forwards=() forward_logs=()
trap 'kill "${forwards[@]}" 2>/dev/null || true; rm -f "${forward_logs[@]}"' EXIT
forward() {  # forward SERVICE: sets $port to a local port forwarded to the Service's port 8080
  local log
  log=$(mktemp)
  forward_logs+=("$log")
  kubectl -n "$namespace" port-forward "svc/$1" :8080 --address 127.0.0.1 >"$log" 2>&1 &
  forwards+=($!)
  port=
  for _ in $(seq 120); do
    port=$(grep -oP 'Forwarding from 127\.0\.0\.1:\K[0-9]+' "$log" || true)
    [[ -n $port ]] && break
    kill -0 "${forwards[-1]}" 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.25
  done
  [[ -n $port ]] || { echo "kubectl port-forward did not start:"; cat "$log"; exit 1; }
}
forward churn
url=http://127.0.0.1:$port
echo "kubectl -n $namespace port-forward svc/churn $port:8080   # then:"
echo "curl -s $url/v2/models/churn/infer -H 'content-type: application/json' -d '{\"inputs\": [...]}'"

say "sending predictions"
python hack/demo_client.py --url "$url" --name churn --rows "$out/data/traffic_normal.csv" --count 8

say "progressive rollouts under live traffic: v2 (good) then v3 (bad)"
python hack/demo_rollout.py --url "$url" --namespace "$namespace" --name churn --model-base "$model_base" \
  --bundles "$out"
kubectl get -n "$namespace" modeldeployment churn
kubectl-modeldeploy -n "$namespace" history churn

say "an A/B with delayed labels: v2 (control) and v3 (treatment) on half the users each"
sha2=$(sha256sum "$out/v2/manifest.json" | cut -d' ' -f1)
sha3=$(sha256sum "$out/v3/manifest.json" | cut -d' ' -f1)
kubectl apply -n "$namespace" -f - <<YAML
apiVersion: modeldeploy.io/v1alpha1
kind: ModelDeployment
metadata:
  name: churn-ab
spec:
  model: {uri: $model_base/v2, format: onnx, version: "2", sha256: "$sha2"}
  variants:
    - {name: control, weight: 50}
    - name: treatment
      weight: 50
      model: {uri: $model_base/v3, format: onnx, version: "3", sha256: "$sha3"}
  replicas: 1
  traffic:
    stickyKey: {header: X-User-Id}
  effectiveness:                        # a label joiner: predictions now, their truth later
    retention: 24h
    controlVariant: control
    minLabelsPerArm: 100
YAML
kubectl wait -n "$namespace" --for=condition=Ready modeldeployment/churn-ab --timeout=5m
forward churn-ab
python hack/demo_ab.py --url "http://127.0.0.1:$port" --namespace "$namespace" --name churn-ab \
  --golden "$out/data/golden.csv"

say "every pod, and the node it runs on"
kubectl get pods -A -o wide

say "done"
cat <<TXT
The cluster keeps running. Try:
  export KUBECONFIG=$KUBECONFIG PATH=$bin:\$PATH
  kubectl get mdep -n $namespace churn -o yaml
  make cluster-down        # stop everything
TXT
