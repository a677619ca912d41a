#!/usr/bin/env bash
# 80-gpu-test-result.sh: wait for the GPU test pods to finish and report, as JSON, whether
# each one passed and, if not, why.
#
# Runs on: the kubeadm control-plane node, as root, after the test pods are created
# (kubeconfig /etc/kubernetes/admin.conf); or on the deployer with KUBECONFIG set, through
# local/with-kubeconfig.sh (a managed control plane such as ACK: only the Kubernetes API).
# Inputs (environment):
#   TEST_PODS        space-separated namespace/name
#   SUCCESS_PATTERN  text a passing pod prints, e.g. "Test PASSED" or "/device:GPU:0"
#   TIMEOUT_SECONDS  how long to wait for all pods to end (Succeeded or Failed), e.g. 600
#   NODE_SETUP       who set the nodes up, for the fix hints: gpu-k8s (default: our node
#                    steps) | ack (the node pool's GPU image and driver label)
#   KUBECONFIG       when set, the kubeconfig to use; else /etc/kubernetes/admin.conf
#   (PODS_PER_NODE and TEST_IMAGE may be passed so a new test re-runs the step; not read.)
# Knobs: POLL_SECONDS (default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one JSON object {"passed": bool, "verdict": "PASSED|FAILED|TIMEOUT", "checkedAt":
#   "<UTC time of the verdict>", "pods": [{"pod": "ns/name", "node": "<.spec.nodeName>", "phase":
#   "...", "passed": bool, "timedOut": bool, "log": "<last 30 lines>", "diagnosis": "..."}]},
#   printed whatever the verdict (checkedAt: `make outputs` tells a verdict from an update that
#   failed later apart from a current one).
# Exit: 0 PASSED; 2 FAILED (a pod ended without the pattern, or its image does not exist);
# 3 TIMEOUT (a pod had not ended after TIMEOUT_SECONDS, none failed); 1 the check could not
# run (bad input, kubectl cannot reach the cluster). On 2 and 3 stderr has one ERROR line
# per pod that did not pass, with its cause: the non-zero exit fails the remote command,
# so `pulumi up` fails with that text and does not record the check (the next up re-runs it).
# A pull the registry answers with NotFound/"manifest unknown" ends that pod's wait at once.
set -euo pipefail

readonly STEP="80-gpu-test-result"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly TEST_PODS="${TEST_PODS:-}"
readonly SUCCESS_PATTERN="${SUCCESS_PATTERN:-}"
readonly TIMEOUT_SECONDS="${TIMEOUT_SECONDS:-600}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly NODE_SETUP="${NODE_SETUP:-gpu-k8s}"
readonly KUBECONFIG_GIVEN="${KUBECONFIG:-}"
# What the kubelet says about each container: waiting (e.g. ErrImagePull and the pull
# error), terminated, and the previous run's termination: an NVIDIA hook failure such as
# "nvidia-container-cli: initialization error: nvml error: driver not loaded" is only
# there (kubectl logs has nothing: the container never started).
readonly MESSAGES='{range .status.containerStatuses[*]}{.state.waiting.reason} {.state.waiting.message}{.state.terminated.reason} {.state.terminated.message}{.lastState.terminated.reason} {.lastState.terminated.message}{"\n"}{end}'
readonly EVENTS='{range .items[*]}{.reason}: {.message}{"\n"}{end}'
# A pull error that retrying cannot fix: the image or tag does not exist (containerd's
# CRI "code = NotFound ... not found", a registry's "manifest unknown").
readonly PULL_ERROR_RE='ErrImagePull|ImagePullBackOff|InvalidImageName|Failed to pull image'
readonly IMAGE_GONE_RE='code = NotFound|manifest unknown|repository does not exist|InvalidImageName'
RECORDS=""
FAILED=0
TIMED_OUT=0
declare -A GONE=()

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# hint <topic>: what to fix, in the words of whoever set the nodes up (NODE_SETUP). On ACK
# the node pool's GPU image brings the driver (its version from the pool's
# ack.aliyun.com/nvidia-driver-version label) and the nvidia runtime: our steps do not run.
hint() {
  if [[ "$NODE_SETUP" == ack ]]; then
    case "$1" in
      newer-driver) printf "use an image for an older CUDA, or a newer driver (the node pool's ack.aliyun.com/nvidia-driver-version label)" ;;
      driver) printf "check the node pool's GPU image and its ack.aliyun.com/nvidia-driver-version label" ;;
      pull) printf "check the node's internet access (gpu-k8s gives pool nodes public IPs, no NAT) or use gpu-k8s:smokeTestImage from a registry the region reaches" ;;
      runtime) printf "the node pool's image is not ACK's GPU image (which sets the nvidia runtime)" ;;
      nvml) printf "replace the node (scale its pool in and out), then make retest" ;;
      allocatable) printf "see the GPU allocatable check" ;;
    esac
    return 0
  fi
  case "$1" in
    newer-driver) printf "use an image for an older CUDA, or a newer driver" ;;
    driver) printf "see 12-gpu-verify, nvidia-smi and dmesg there" ;;
    pull) printf "set gpu-k8s:registryMirrors" ;;
    runtime) printf "containerd's default runtime is not nvidia (default_runtime_name, 20-container-runtime), or set runtimeClassName: nvidia" ;;
    nvml) printf "check SystemdCgroup = true in /etc/containerd/config.toml, then make retest" ;;
    allocatable) printf "see 70-gpu-allocatable" ;;
  esac
}

kc() { timeout 20 kubectl "$@" 2>/dev/null || true; }

phase_of() { kc get pod -n "${1%%/*}" "${1#*/}" -o jsonpath='{.status.phase}'; }

events_of() { kc get events -n "${1%%/*}" --field-selector "involvedObject.name=${1#*/}" -o jsonpath="$EVENTS"; }

# --- a Pending pod whose image does not exist never starts: stop waiting for it ---
image_gone() {
  local text
  text=$(kc get pod -n "${1%%/*}" "${1#*/}" -o jsonpath="$MESSAGES")
  [[ "$text" =~ $PULL_ERROR_RE ]] || return 1
  text+=$'\n'$(events_of "$1")
  [[ "$text" =~ $IMAGE_GONE_RE ]]
}

wait_pods() {
  local deadline=$((SECONDS + TIMEOUT_SECONDS)) pod busy
  while :; do
    busy=0
    for pod in $TEST_PODS; do
      [[ -n "${GONE[$pod]:-}" ]] && continue
      case "$(phase_of "$pod")" in
        Succeeded | Failed) ;;
        Pending) if image_gone "$pod"; then
          GONE[$pod]=1
          log "$pod: its image does not exist, not waiting for it"
        else
          busy=$((busy + 1))
        fi ;;
        *) busy=$((busy + 1)) ;;
      esac
    done
    ((busy == 0 || SECONDS >= deadline)) && return 0
    sleep "$POLL_SECONDS"
  done
}

# the first line of $2 that matches $1, from "Failed to pull image" on when it says that
first_line() { grep -m1 -E -- "$1" <<<"$2" | sed -E 's/^.*(Failed to pull image)/\1/' | cut -c1-300 || true; }

diagnose() { # pod phase passed logs events messages
  local text="$4"$'\n'"$5"$'\n'"$6" need re='unsatisfied condition: (cuda>=[0-9.]+)'
  [[ "$3" == true ]] && return 0
  if [[ "$text" =~ $re ]]; then
    need="${BASH_REMATCH[1]}"
    printf 'the image needs a newer driver (unsatisfied condition: %s): %s' "$need" "$(hint newer-driver)"
  elif [[ "$text" == *"driver not loaded"* ]]; then
    printf 'the NVIDIA kernel driver is not loaded on the node (%s): %s' \
      "$(first_line 'driver not loaded' "$text" | sed -E 's/^[A-Za-z]+ +//')" "$(hint driver)"
  elif [[ -n "${GONE[$1]:-}" || ("$text" =~ $PULL_ERROR_RE && "$text" =~ $IMAGE_GONE_RE) ]]; then
    printf 'the image does not exist (%s): fix gpu-k8s:smokeTestImage (stopped waiting at once)' \
      "$(first_line "$IMAGE_GONE_RE" "$text")"
  elif [[ "$text" =~ $PULL_ERROR_RE ]]; then
    printf 'cannot pull the test image (%s): the registry is unreachable or too slow from the node: %s' \
      "$(first_line 'Failed to pull image|ErrImagePull|ImagePullBackOff' "$text")" "$(hint pull)"
  elif [[ "$text" == *"CUDA driver version is insufficient for CUDA runtime version"* ]]; then
    printf "the node's driver is too old for the image's CUDA (CUDA driver version is insufficient for CUDA runtime version): %s" "$(hint newer-driver)"
  elif [[ "$text" == *"libnvidia-ml.so"*"cannot open shared object file"* ]]; then
    printf "the container did not get the NVIDIA runtime (libnvidia-ml.so.1: cannot open shared object file): %s" "$(hint runtime)"
  elif [[ "$text" == *"Failed to initialize NVML: Unknown Error"* ]]; then
    printf 'the container lost access to the GPU devices (Failed to initialize NVML: Unknown Error), typically after a systemd daemon-reload with the wrong cgroup driver: %s' "$(hint nvml)"
  elif [[ "$2" == Pending ]]; then
    printf 'still Pending after %ss: %s' "$TIMEOUT_SECONDS" "$(grep -m1 FailedScheduling <<<"$5" || head -n 1 <<<"$6$5")"
    [[ "$5" == *"Insufficient nvidia.com/gpu"* ]] &&
      printf ' (no free nvidia.com/gpu on the node: the device plugin has not registered its GPUs, or all are in use; %s)' "$(hint allocatable)"
  elif [[ "$2" == Succeeded ]]; then
    printf 'the pod succeeded but its log lacks "%s"' "$SUCCESS_PATTERN"
  elif [[ "$2" == Failed ]]; then
    printf 'the pod failed; last log line: %s' "$(grep -v '^[[:space:]]*$' <<<"$4" | tail -n 1 | cut -c1-300)"
  else
    printf 'the pod is still %s after %ss' "${2:-missing}" "$TIMEOUT_SECONDS"
  fi
  return 0
}

collect() { # one record per pod: 7 NUL-terminated fields
  local pod="$1" ns="${1%%/*}" name="${1#*/}" phase node logs events messages passed=false timed_out=false why
  phase=$(phase_of "$pod")
  node=$(kc get pod -n "$ns" "$name" -o jsonpath='{.spec.nodeName}')
  logs=$(kc logs -n "$ns" "$name" --tail=30)
  if [[ "$phase" == Succeeded ]] && grep -qF -- "$SUCCESS_PATTERN" <<<"$logs"; then
    passed=true
  fi
  if [[ "$passed" == false ]]; then
    events=$(events_of "$pod")
    messages=$(kc get pod -n "$ns" "$name" -o jsonpath="$MESSAGES")
    if [[ "$phase" == Succeeded || "$phase" == Failed || -n "${GONE[$pod]:-}" ]]; then
      FAILED=$((FAILED + 1))
    else
      timed_out=true
      TIMED_OUT=$((TIMED_OUT + 1))
    fi
  fi
  why=$(diagnose "$pod" "$phase" "$passed" "$logs" "${events:-}" "${messages:-}")
  log "$pod on ${node:-no node}: ${phase:-missing}, passed=$passed"
  [[ "$passed" == true ]] || log "ERROR: $pod on ${node:-no node}: ${phase:-missing}: ${why//$'\n'/ }"
  printf '%s\0' "$pod" "$node" "$phase" "$passed" "$timed_out" "$logs" "$why" >>"$RECORDS"
}

print_json() {
  python3 - "$RECORDS" <<'PY'
import json, sys, time
fields = open(sys.argv[1], "rb").read().decode("utf-8", "replace").split("\0")[:-1]
keys = ("pod", "node", "phase", "passed", "timedOut", "log", "diagnosis")
pods = [dict(zip(keys, fields[i:i + 7])) for i in range(0, len(fields), 7)]
for pod in pods:
    pod["passed"] = pod["passed"] == "true"
    pod["timedOut"] = pod["timedOut"] == "true"
passed = bool(pods) and all(p["passed"] for p in pods)
failed = any(not p["passed"] and not p["timedOut"] for p in pods)
verdict = "PASSED" if passed else "FAILED" if failed or not pods else "TIMEOUT"
checked_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
print(json.dumps({"passed": passed, "verdict": verdict, "checkedAt": checked_at, "pods": pods}))
PY
}

# --- the verdict as the exit status: a failed test must fail the remote command ---
finish() {
  local total
  total=$(wc -w <<<"$TEST_PODS")
  if ((FAILED > 0)); then
    log "ERROR: GPU test FAILED: $((FAILED + TIMED_OUT)) of $total test pods did not pass (causes above); after fixing the cause run make retest"
    exit 2
  elif ((TIMED_OUT > 0)); then
    log "ERROR: GPU test TIMEOUT: $TIMED_OUT of $total test pods had not finished after ${TIMEOUT_SECONDS}s (causes above); the next pulumi up checks again"
    exit 3
  fi
  log "GPU test PASSED on $total test pods"
}

# --- the kubeconfig: $KUBECONFIG when given (the deployer), else the control plane's admin.conf ---
use_kubeconfig() {
  if [[ -n "$KUBECONFIG_GIVEN" ]]; then
    [[ -f "$KUBECONFIG_GIVEN" ]] || die "KUBECONFIG=$KUBECONFIG_GIVEN: no such file"
    export KUBECONFIG="$KUBECONFIG_GIVEN"
    timeout 20 kubectl get --raw=/readyz >/dev/null 2>&1 ||
      die "kubectl cannot reach the API server with the kubeconfig in \$KUBECONFIG: is the cluster up and its API server reachable from here?"
    return 0
  fi
  export KUBECONFIG="$ROOT/etc/kubernetes/admin.conf"
  [[ -f "$KUBECONFIG" ]] || die "/etc/kubernetes/admin.conf not found: run this on the initialised control plane (or set KUBECONFIG)"
  timeout 20 kubectl get --raw=/readyz >/dev/null 2>&1 ||
    die "kubectl cannot reach the API server with /etc/kubernetes/admin.conf: is the control plane up?"
}

main() {
  [[ "$TEST_PODS" =~ ^[a-z0-9./\ -]+$ && "$TEST_PODS" == */* ]] || die "TEST_PODS must be space-separated namespace/name (got '$TEST_PODS')"
  [[ -n "$SUCCESS_PATTERN" ]] || die "SUCCESS_PATTERN is empty"
  [[ "$TIMEOUT_SECONDS" =~ ^[0-9]+$ ]] || die "TIMEOUT_SECONDS must be a number (got '$TIMEOUT_SECONDS')"
  [[ "$NODE_SETUP" == gpu-k8s || "$NODE_SETUP" == ack ]] || die "NODE_SETUP must be gpu-k8s or ack (got '$NODE_SETUP')"
  use_kubeconfig
  RECORDS=$(mktemp)
  trap 'rm -f "$RECORDS"' EXIT
  wait_pods
  local pod
  for pod in $TEST_PODS; do
    collect "$pod"
  done
  print_json
  finish
}

main "$@"
