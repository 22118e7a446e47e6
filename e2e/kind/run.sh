#!/usr/bin/env bash
# End to end on a real cluster, for a machine with Docker, kind, kubectl and helm.
# Creates a kind cluster, builds and loads both images, installs the chart, runs the digits
# example on 2 nodes, checks that its progress reaches status, kills the operator leader and
# checks that the other replica leads, deletes a pod to simulate a preemption (the new
# leader handles it), waits for Succeeded, and says PASS or FAIL. The cluster is deleted at the end unless KEEP_CLUSTER=1.
set -euo pipefail

cluster="${CLUSTER:-lightjob-e2e}"
namespace="${NAMESPACE:-default}"
tag="e2e"
root="$(cd "$(dirname "$0")/../.." && pwd)"

log() { printf '[kind-e2e] %s\n' "$*"; }
fail() { log "FAIL: $*"; kubectl get lj,pods -n "$namespace" -o wide || true; exit 1; }
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != "1" ]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done

log "creating the kind cluster $cluster"
kind create cluster --name "$cluster" --wait 120s

log "building and loading the images"
docker build -f "$root/docker/operator.Dockerfile" -t "lightjob/operator:$tag" "$root"
docker build -f "$root/docker/runtime.Dockerfile" -t "lightjob/runtime:$tag" "$root"
kind load docker-image --name "$cluster" "lightjob/operator:$tag" "lightjob/runtime:$tag"

log "installing the chart"
helm install lightjob "$root/charts/lightjob" -n lightjob-system --create-namespace --wait \
  --set image.repository=lightjob/operator --set image.tag="$tag" --set image.pullPolicy=Never \
  --set operator.progressInterval=2 --set operator.interval=2

log "applying the digits example on 2 nodes (150 epochs, long enough to watch)"
sed -e "s|image: .*|image: lightjob/runtime:$tag|" -e 's|value: "30"|value: "150"|' \
  "$root/examples/digits/lightningjob.yaml" | kubectl apply -n "$namespace" -f -

wait_for_phase() {
  local want="$1" seconds="$2" phase=""
  for _ in $(seq "$seconds"); do
    phase="$(kubectl get lj digits -n "$namespace" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    if [ "$phase" = "$want" ]; then return 0; fi
    if [ "$phase" = "Failed" ]; then return 1; fi
    sleep 1
  done
  return 1
}

wait_for_phase Running 300 || fail "the job did not start"
log "waiting for training progress in the job's status (read from node 0's metrics)"
seen=""
for _ in $(seq 90); do
  seen="$(kubectl get lj digits -n "$namespace" \
    -o jsonpath='{.status.phase}/{.status.progress.step}' 2>/dev/null || true)"
  case "$seen" in Running/[0-9]*) break ;; esac
  sleep 1
done
case "$seen" in Running/[0-9]*) ;; *) fail "no progress in status while running (saw $seen)" ;; esac
kubectl get lj digits -n "$namespace"

holder() { kubectl get lease lightjob -n lightjob-system -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true; }
leader="$(holder)"
leader="${leader%_*}"  # the holder is <pod>_<process suffix>
[ -n "$leader" ] || fail "no operator replica holds the Lease"
log "killing the operator leader $leader at once, as a node loss would; the standby must lead"
kubectl delete pod "$leader" -n lightjob-system --grace-period=0 --force
new=""
for _ in $(seq 60); do
  new="$(holder)"
  new="${new%_*}"
  if [ -n "$new" ] && [ "$new" != "$leader" ]; then break; fi
  sleep 1
done
[ -n "$new" ] && [ "$new" != "$leader" ] || fail "no new operator leader within 60 s"
log "the operator leader is now $new"

log "deleting digits-node-1, as a preemption would"
kubectl delete pod digits-node-1 -n "$namespace" --wait=false
wait_for_phase Succeeded 600 || fail "the job did not succeed"

preemptions="$(kubectl get lj digits -n "$namespace" -o jsonpath='{.status.preemptions}')"
restarts="$(kubectl get lj digits -n "$namespace" -o jsonpath='{.status.restarts}')"
kubectl get lj digits -n "$namespace"
[ "$preemptions" -ge 1 ] || fail "expected a preemption, status says $preemptions"
[ "$restarts" = "0" ] || fail "a preemption must not count as a failure, status says restarts=$restarts"
log "PASS"
