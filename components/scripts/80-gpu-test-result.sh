#!/usr/bin/env bash
# 80-gpu-test-result.sh: wait for the GPU test pods to finish and report, as JSON, whether
# each one passed and, if not, why.
#
# Runs on: the control-plane node, as root, after the test pods are created.
# Inputs (environment):
#   TEST_PODS        space-separated namespace/name
#   SUCCESS_PATTERN  text a passing pod prints, e.g. "Test PASSED" or "/device:GPU:0"
#   TIMEOUT_SECONDS  how long to wait for all pods to end (Succeeded or Failed), e.g. 600
#   (PODS_PER_NODE and TEST_IMAGE may be passed so a new test re-runs the step; not read.)
# Knobs: POLL_SECONDS (default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one JSON object {"passed": bool, "pods": [{"pod": "ns/name", "node": "...",
#   "phase": "...", "passed": bool, "log": "<last 30 lines>", "diagnosis": "..."}]}.
# Exit 0 even when a test failed (the caller turns passed=false into an error); non-zero
# only when kubectl cannot reach the cluster.
set -euo pipefail

readonly STEP="80-gpu-test-result"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly TEST_PODS="${TEST_PODS:-}"
readonly SUCCESS_PATTERN="${SUCCESS_PATTERN:-}"
readonly TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-600}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly MESSAGES='{range .status.containerStatuses[*]}{.state.waiting.reason} {.state.waiting.message}{.state.terminated.reason} {.state.terminated.message}{"\n"}{end}'
RECORDS=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

kc() { timeout 20 kubectl "$@" 2>/dev/null || true; }

phase_of() { kc get pod -n "${1%%/*}" "${1#*/}" -o jsonpath='{.status.phase}'; }

wait_pods() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) pod busy
  while :; do
    busy=0
    for pod in $TEST_PODS; do
      case "$(phase_of "$pod")" in
        Succeeded | Failed) ;;
        *) busy=$((busy + 1)) ;;
      esac
    done
    ((busy == 0 || SECONDS >= deadline)) && return 0
    sleep "$POLL_SECONDS"
  done
}

diagnose() { # pod phase passed logs events messages
  local text="$4"$'\n'"$5"$'\n'"$6" need re='unsatisfied condition: (cuda>=[0-9.]+)'
  [[ "$3" == true ]] && return 0
  if [[ "$text" =~ $re ]]; then
    need="${BASH_REMATCH[1]}"
    printf 'the image needs a newer driver (unsatisfied condition: %s): use an image for an older CUDA, or a newer driver' "$need"
  elif [[ "$2" == Pending ]]; then
    printf 'still Pending after %ss: %s' "$TIMEOUT_SECONDS" "$(grep -m1 FailedScheduling <<<"$5" || head -n 1 <<<"$6$5")"
    [[ "$5" == *"Insufficient nvidia.com/gpu"* ]] && printf ' (no node has a free nvidia.com/gpu: check the device plugin, 70-gpu-allocatable)'
  elif [[ "$2" == Succeeded ]]; then
    printf 'the pod succeeded but its log lacks "%s"' "$SUCCESS_PATTERN"
  elif [[ "$2" == Failed ]]; then
    printf 'the pod failed: see its log'
  else
    printf 'the pod is still %s after %ss' "${2:-missing}" "$TIMEOUT_SECONDS"
  fi
  return 0
}

collect() { # one record per pod: 6 NUL-terminated fields
  local pod="$1" ns="${1%%/*}" name="${1#*/}" phase node logs events messages passed=false
  phase=$(phase_of "$pod")
  node=$(kc get pod -n "$ns" "$name" -o jsonpath='{.spec.nodeName}')
  logs=$(kc logs -n "$ns" "$name" --tail=30)
  if [[ "$phase" == Succeeded ]] && grep -qF -- "$SUCCESS_PATTERN" <<<"$logs"; then
    passed=true
  fi
  if [[ "$passed" == false ]]; then
    events=$(kc get events -n "$ns" --field-selector "involvedObject.name=$name" -o jsonpath='{range .items[*]}{.reason}: {.message}{"\n"}{end}')
    messages=$(kc get pod -n "$ns" "$name" -o jsonpath="$MESSAGES")
  fi
  log "$pod on ${node:-no node}: ${phase:-missing}, passed=$passed"
  printf '%s\0' "$pod" "$node" "$phase" "$passed" "$logs" \
    "$(diagnose "$pod" "$phase" "$passed" "$logs" "${events:-}" "${messages:-}")" >>"$RECORDS"
}

print_json() {
  python3 - "$RECORDS" <<'PY'
import json, sys
fields = open(sys.argv[1], "rb").read().decode("utf-8", "replace").split("\0")[:-1]
keys = ("pod", "node", "phase", "passed", "log", "diagnosis")
pods = [dict(zip(keys, fields[i:i + 6])) for i in range(0, len(fields), 6)]
for pod in pods:
    pod["passed"] = pod["passed"] == "true"
print(json.dumps({"passed": bool(pods) and all(p["passed"] for p in pods), "pods": pods}))
PY
}

main() {
  [[ "$TEST_PODS" =~ ^[a-z0-9./\ -]+$ && "$TEST_PODS" == */* ]] || die "TEST_PODS must be space-separated namespace/name (got '$TEST_PODS')"
  [[ -n "$SUCCESS_PATTERN" ]] || die "SUCCESS_PATTERN is empty"
  [[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS must be a number (got '$TIMEOUT_SECONDS')"
  export KUBECONFIG="$ROOT/etc/kubernetes/admin.conf"
  timeout 20 kubectl get --raw=/readyz >/dev/null 2>&1 ||
    die "kubectl cannot reach the API server with /etc/kubernetes/admin.conf: is the control plane up?"
  RECORDS=$(mktemp)
  trap 'rm -f "$RECORDS"' EXIT
  wait_pods
  local pod
  for pod in $TEST_PODS; do
    collect "$pod"
  done
  print_json
}

main "$@"
