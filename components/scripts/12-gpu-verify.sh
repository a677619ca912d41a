#!/usr/bin/env bash
# 12-gpu-verify.sh: prove the driver works, and report what the node has.
#
# Runs on: every GPU node, as root, after 11-nvidia-driver.
# Inputs (environment):
#   EXPECTED_GPU_NAME  what nvidia-smi should call the GPU, e.g. "Tesla P4" or
#                      "NVIDIA A10-2Q"; may be empty (no check)
#   DRIVER_VERSION     the expected driver version; may be empty (no check)
#   GPU_DRIVER         tesla | grid, what the hint on failure talks about; may be empty
# Knobs: VERIFY_TRIES (nvidia-smi attempts, default 6), POLL_SECONDS (pause, default 5).
# stdin: not read.
# stdout: exactly the lines of
#   nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
#   e.g. "Tesla P4, 535.129.03, 7680 MiB"; warnings go to stderr.
set -euo pipefail

readonly STEP="12-gpu-verify"
readonly EXPECTED_GPU_NAME="${EXPECTED_GPU_NAME:-}"
readonly DRIVER_VERSION="${DRIVER_VERSION:-}"
readonly GPU_DRIVER="${GPU_DRIVER:-}"
readonly VERIFY_TRIES="${VERIFY_TRIES:-6}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly QUERY=("--query-gpu=name,driver_version,memory.total" "--format=csv,noheader")
GPUS=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# --- nvidia-smi can fail for a few seconds right after an install: retry ---
query_gpus() {
  command -v nvidia-smi >/dev/null 2>&1 ||
    die "nvidia-smi not found: the NVIDIA driver is not installed; check 11-nvidia-driver's output"
  local try err out=""
  err=$(mktemp)
  for ((try = 1; try <= VERIFY_TRIES; try++)); do
    if out=$(nvidia-smi "${QUERY[@]}" 2>"$err") && [[ -n "$out" ]]; then
      rm -f "$err"
      GPUS="$out"
      return 0
    fi
    out="$(cat "$err") $out"
    log "nvidia-smi not ready (try $try of $VERIFY_TRIES): ${out//$'\n'/ }"
    if ((try < VERIFY_TRIES)); then
      sleep "$POLL_SECONDS"
    fi
  done
  rm -f "$err"
  die "nvidia-smi failed: ${out//$'\n'/ }. The driver is not loaded: $(not_loaded_hint)"
}

# --- what to check: on a compute node the kernel refused nvidia.ko; only vGPU is about GRID ---
not_loaded_hint() {
  if [[ "$GPU_DRIVER" == grid ]]; then
    printf "this vGPU family (ecs.vgn*/ecs.sgn*) needs the GRID driver, which needs the vGPU; check 11-nvidia-driver's output (Aliyun's plugin or gridDriverUrl), 'nvidia-smi -q' and 'dmesg | grep -i nvrm'"
  else
    printf "check 'dmesg | grep -i nvrm' (the kernel's reason), Secure Boot ('mokutil --sb-state'), nouveau still bound ('lsmod | grep nouveau'), that the driver branch%s supports this GPU, and 11-nvidia-driver's output" \
      "${DRIVER_VERSION:+ ($DRIVER_VERSION)}"
  fi
}

# --- mismatches are warnings: the node works, but not as the catalog expected ---
check_expectations() {
  local name driver memory
  while IFS=',' read -r name driver memory; do
    driver="${driver# }"
    log "GPU: $name, driver $driver, memory ${memory# }"
    if [[ -n "$EXPECTED_GPU_NAME" && "$name" != "$EXPECTED_GPU_NAME" ]]; then
      warn "nvidia-smi reports GPU '$name', expected '$EXPECTED_GPU_NAME' for this instance type"
    fi
    if [[ -n "$DRIVER_VERSION" && "$driver" != "$DRIVER_VERSION" ]]; then
      warn "driver $driver is loaded, expected $DRIVER_VERSION (a reboot may be pending, or the family installs its own)"
    fi
  done <<<"$GPUS"
}

# --- vGPU: an unlicensed GRID guest works, but NVIDIA throttles it after a while ---
check_license() {
  local details
  if ! details=$(nvidia-smi -q 2>/dev/null); then
    warn "nvidia-smi -q failed; vGPU license status unknown"
    return 0
  fi
  if grep -Eqi 'License Status[[:space:]]*:[[:space:]]*Unlicensed' <<<"$details"; then
    warn "nvidia-smi -q shows License Status: Unlicensed: this vGPU will be throttled; *-vws families include a GRID license (install the driver with Aliyun's plugin), otherwise point /etc/nvidia/gridd.conf at a license server"
  fi
}

main() {
  track_time
  query_gpus
  printf '%s\n' "$GPUS"
  check_expectations
  check_license
}

main "$@"
