#!/usr/bin/env bash
# with-kubeconfig.sh: run a cluster check (70-gpu-allocatable, 80-gpu-test-result) on the
# machine running pulumi (the deployer), against the cluster whose kubeconfig is on stdin.
#
# Runs on: the deployer, from the project directory (Pulumi runs local commands there), for
# a managed control plane (ACK) where no node can be reached over SSH: the check reads pod
# status and logs through the Kubernetes API only. components/remote.py run_local_script.
# Usage: VAR='value' ... bash components/scripts/local/with-kubeconfig.sh components/scripts/<NN-name>.sh
# Inputs: $1 the check script (run in place: its `source lib/common.sh` works unrendered);
#   the check's own inputs as environment (passed through unchanged).
# stdin: the kubeconfig (a secret: written to a 0600 temp file, never echoed, never on argv;
#   the file is removed on exit).
# stdout: the check's stdout, unchanged.
# Exit: the check's status (70: 1 on timeout; 80: 2 FAILED, 3 TIMEOUT); 1 when it cannot
# run (no script, empty stdin, no kubectl / bash 4 / timeout / python3 on this machine).
# GPU_K8S_CHECK_INPUTS (optional): a digest of what the check verifies (its inputs but the
#   kubeconfig, components/steps.py). On an update (PULUMI_COMMAND_STDOUT/_STDERR: the last
#   result) whose digest is the one recorded ("check-inputs: <digest>" on stderr), only the
#   credential is new (another engineer's: ACK issues one per RAM user): the last result
#   stands and the cluster is not asked again (it may have scaled its pools to 0 since).
set -euo pipefail

readonly STEP="with-kubeconfig"
KUBECONFIG_FILE=""

# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

check_script() {
  [[ $# -eq 1 ]] || die "usage: with-kubeconfig.sh components/scripts/<NN-name>.sh (got $# arguments)"
  [[ "$1" =~ (^|/)[0-9][0-9]-[a-z0-9-]+\.sh$ ]] || die "$1 is not a check script (components/scripts/<NN-name>.sh)"
  [[ -f "$1" ]] || die "$1 not found: run from the project directory"
}

# --- stdin to a file only this user can read; the EXIT trap removes it ---
save_kubeconfig() {
  KUBECONFIG_FILE=$(umask 077 && mktemp "${TMPDIR:-/tmp}/gpu-k8s-kubeconfig.XXXXXX")
  (umask 077 && cat >"$KUBECONFIG_FILE")
  [[ -s "$KUBECONFIG_FILE" ]] || die "no kubeconfig on stdin"
}

# What the checks need on this machine: kubectl (within one minor version of the API
# server: Kubernetes' version skew policy), bash 4+ (associative arrays), GNU timeout and
# python3 (80 prints its JSON with it). macOS ships bash 3.2 and no timeout.
check_tools() {
  command -v kubectl >/dev/null 2>&1 ||
    die "kubectl not found on this machine: the ACK backend runs the GPU checks from here; install kubectl of the cluster's minor version (or one minor apart)"
  ((BASH_VERSINFO[0] >= 4)) ||
    die "bash $BASH_VERSION is too old for the GPU checks (bash 4 or newer; on macOS: brew install bash, first on PATH)"
  command -v timeout >/dev/null 2>&1 || die "timeout not found on this machine (GNU coreutils; on macOS: brew install coreutils)"
  command -v python3 >/dev/null 2>&1 || die "python3 not found on this machine: the GPU test result check needs it"
}

recorded_inputs() { # the last "check-inputs: " line of the previous run's stderr
  local line found=""
  while IFS= read -r line; do
    if [[ "$line" == "check-inputs: "* ]]; then found="${line#check-inputs: }"; fi
  done <<<"${PULUMI_COMMAND_STDERR:-}"
  printf '%s' "$found"
}

reuse_previous_result() { # succeeds (and prints it) when only the kubeconfig changed
  [[ -n "${GPU_K8S_CHECK_INPUTS:-}" && -n "${PULUMI_COMMAND_STDOUT:-}" ]] || return 1
  [[ "$(recorded_inputs)" == "$GPU_K8S_CHECK_INPUTS" ]] || return 1
  log "what the check verifies is unchanged (only the kubeconfig is new): its last result stands"
  printf '%s\n' "$PULUMI_COMMAND_STDOUT"
  printf 'check-inputs: %s\n' "$GPU_K8S_CHECK_INPUTS" >&2
}

main() {
  trap '[[ -z "$KUBECONFIG_FILE" ]] || rm -f "$KUBECONFIG_FILE"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  check_script "$@"
  if reuse_previous_result; then
    cat >/dev/null # the kubeconfig on stdin is not needed
    exit 0
  fi
  save_kubeconfig
  check_tools
  export KUBECONFIG="$KUBECONFIG_FILE"
  local rc=0
  bash "$1" </dev/null || rc=$?
  if ((rc == 0)) && [[ -n "${GPU_K8S_CHECK_INPUTS:-}" ]]; then
    printf 'check-inputs: %s\n' "$GPU_K8S_CHECK_INPUTS" >&2
  fi
  exit "$rc"
}

main "$@"
