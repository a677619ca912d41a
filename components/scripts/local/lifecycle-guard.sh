#!/usr/bin/env bash
# lifecycle-guard.sh: refuse, before anything moves, the changes a running stack cannot take
# in place (components/lifecycle.py).
#
# Runs on: the deployer, as the first resource of every `pulumi up` (a local command). Every
# other resource of the program depends on it, so when it fails nothing else is created,
# updated or deleted: the engine performs deletes only after a program that succeeded.
# Usage: FACTS='key=value ...' bash components/scripts/local/lifecycle-guard.sh
# Inputs (environment):
#   FACTS                  space-separated key=value pairs: what this stack is, as configured now
#   PULUMI_COMMAND_STDOUT  set by pulumi-command when it updates the guard: the facts the last
#                          successful run recorded (absent at create: a new stack, nothing to compare)
# stdin: not read.
# stdout: the facts, one key=value per line, sorted (the next run compares with them).
# Exit: 0; 1 with one line per refused change on stderr (what changed and what to do instead).
# A fact the previous run did not record (a fact added by a newer gpu-k8s) is accepted.
set -euo pipefail

readonly STEP="lifecycle-guard"

# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

# What to do instead, per fact: each one moves or rebuilds something a running cluster keeps.
advice() { # key old new
  case "$1" in
    alicloud:region)
      echo "the alicloud provider would address this stack's resources in $3 while they live in $2, and leave them (and the key pair) behind: set alicloud:region back to $2, or make down, then make up in $3" ;;
    gpu-k8s:cluster)
      echo "a running cluster cannot change backends: set gpu-k8s:cluster back to $2, or make down, then make up with $3" ;;
    control-plane)
      echo "moving the control plane from $2 to $3 (first pool removed, renamed or reordered, or controlPlaneInstanceType added or removed) would strand the cluster: keep $2 first, or make down, then make up" ;;
    gpu-k8s:kubernetesVersion)
      echo "kubeadm here does not upgrade a running cluster (its nodes keep $2; 30-kube-packages refuses the skew): set gpu-k8s:kubernetesVersion back to $2, or make down, then make up on $3" ;;
    gpu-k8s:podCidr)
      echo "the pod network of a running cluster is fixed at kubeadm init (flannel and the nodes keep $2): set gpu-k8s:podCidr back to $2, or make down, then make up" ;;
    *)
      echo "set it back to $2, or make down, then make up" ;;
  esac
}

parse_facts() { # the FACTS words, validated, one per line
  local fact facts
  [[ -n "${FACTS:-}" ]] || die "FACTS is empty: expected key=value pairs"
  read -ra facts <<<"$FACTS" # split on blanks only: a * or ? in a value is never a glob
  for fact in "${facts[@]}"; do
    [[ "$fact" =~ ^[A-Za-z][A-Za-z0-9:._-]*=[^[:space:]]*$ ]] || die "FACTS: '$fact' is not key=value"
    printf '%s\n' "$fact"
  done | sort
}

previous_value() { # key: its value in the previous run's facts; fails when absent
  local line
  while IFS= read -r line; do
    if [[ "${line%%=*}" == "$1" ]]; then
      printf '%s' "${line#*=}"
      return 0
    fi
  done <<<"${PULUMI_COMMAND_STDOUT:-}"
  return 1
}

refused_changes() { # facts (one per line): a refusal line per fact whose value changed
  local fact key new old
  while IFS= read -r fact; do
    key="${fact%%=*}" new="${fact#*=}"
    old=$(previous_value "$key") || continue
    if [[ "$old" != "$new" ]]; then
      printf 'refused: %s changed from %s to %s on a running stack: %s\n' "$key" "$old" "$new" "$(advice "$key" "$old" "$new")"
    fi
  done <<<"$1"
}

main() {
  local facts refusals
  facts=$(parse_facts)
  if [[ -n "${PULUMI_COMMAND_STDOUT:-}" ]]; then
    refusals=$(refused_changes "$facts")
    if [[ -n "$refusals" ]]; then
      printf '%s\n' "$refusals" >&2
      exit 1
    fi
  fi
  printf '%s\n' "$facts"
}

main "$@"
