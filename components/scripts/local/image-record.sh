#!/usr/bin/env bash
# image-record.sh: print the ECS image a node runs (components/node.py, the <hostname>-image record).
#
# Runs on: the deployer, as a local command, before the node's instance is created or changed;
# the instance's image_id is this command's stdout.
# Usage: IMAGE='m-...' FOR_INSTANCE='<spot strategy>,<price limit>,<disk category>' bash components/scripts/local/image-record.sh
# Inputs (environment):
#   IMAGE                  the image a node created now gets (gpu-k8s:imageId, or the newest match)
#   FOR_INSTANCE           the instance's inputs whose change replaces it (ForceNew: spot strategy,
#                          spot price limit, system disk category)
#   PULUMI_COMMAND_STDOUT  set by pulumi-command on an update (the create command runs again, as no
#   PULUMI_COMMAND_STDERR  update command is set): what the record printed last time, image and
#                          FOR_INSTANCE; absent at create
# stdin: not read.
# stdout: the image id. stderr: a line "for-instance: <FOR_INSTANCE>" (what the next run compares with).
# Exit: 0; 1 when IMAGE is empty.
#
# Why: an instance whose image_id changes is re-imaged in place (ReplaceSystemDisk wipes the node
# while Pulumi reports success), so a running node keeps the image it was created with, and only
# a new instance gets the image chosen now: when the record is created (a new node, or
# `make replace-node`, which replaces it), or when FOR_INSTANCE changed, because then the engine
# replaces the instance too (its new image must not be one Aliyun has since retired).
set -euo pipefail

readonly STEP="image-record"

# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

# The FOR_INSTANCE the previous run recorded: the last "for-instance: " line of its stderr
# (pulumi-command keeps the whole stderr: anything else the shell printed stays beside it).
recorded_for_instance() {
  local line found=""
  while IFS= read -r line; do
    if [[ "$line" == "for-instance: "* ]]; then found="${line#for-instance: }"; fi
  done <<<"${PULUMI_COMMAND_STDERR:-}"
  printf '%s' "$found"
}

# Whether two FOR_INSTANCE values describe the same instance: the strategy and disk as text, the
# price limit as a number (1.8 and 1.80 are the same float for the provider: no replacement).
same_instance() { # recorded current
  local old_strategy old_price old_disk new_strategy new_price new_disk
  IFS=, read -r old_strategy old_price old_disk <<<"$1"
  IFS=, read -r new_strategy new_price new_disk <<<"$2"
  [[ "$old_strategy" == "$new_strategy" && "$old_disk" == "$new_disk" ]] || return 1
  [[ -z "$old_price" && -z "$new_price" ]] && return 0
  [[ -n "$old_price" && -n "$new_price" ]] || return 1
  awk -v a="$old_price" -v b="$new_price" 'BEGIN { exit !(a + 0 == b + 0) }'
}

# Fail safe: without a recorded FOR_INSTANCE (a record made before it was kept) the image stays.
# Printing another image for a running instance would re-image it in place; keeping it can at
# worst leave a replaced instance on the image it had.
chosen_image() {
  local recorded
  if [[ -z "${PULUMI_COMMAND_STDOUT:-}" ]]; then
    printf '%s' "$IMAGE" # a new record: a new instance
    return 0
  fi
  recorded=$(recorded_for_instance)
  if [[ -n "$recorded" ]] && ! same_instance "$recorded" "$FOR_INSTANCE"; then
    printf '%s' "$IMAGE" # the instance is being replaced (a ForceNew input changed)
  else
    printf '%s' "$PULUMI_COMMAND_STDOUT" # the running instance keeps its image
  fi
}

main() {
  [[ -n "${IMAGE:-}" ]] || die "IMAGE is empty: expected an ECS image id"
  chosen_image
  printf 'for-instance: %s' "${FOR_INSTANCE:-}" >&2
}

main "$@"
