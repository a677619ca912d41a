#!/usr/bin/env bash
# 00-wait-boot.sh: wait until a fresh node has finished booting, before any other step.
#
# Runs on: every node, as root, first (over SSH).
# Inputs (environment): none.
# Knobs (tests and impatient humans):
#   LOCK_WAIT_SECONDS  how long to wait for the apt/dpkg locks (default 600)
#   POLL_SECONDS       seconds between lock checks (default 5)
#   GPU_K8S_ROOT       prefix for every host path (tests only; default empty)
# stdin: not read.
# stdout: nothing (progress goes to stderr).
#
# cloud-init may still be writing apt sources, and unattended-upgrades holds the dpkg
# lock for minutes on first boot; later steps' apt calls would otherwise fail.
set -euo pipefail

readonly STEP="00-wait-boot"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly LOCK_WAIT_SECONDS="${LOCK_WAIT_SECONDS:-600}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly LOCK_FILES=(
  "$ROOT/var/lib/dpkg/lock-frontend"
  "$ROOT/var/lib/dpkg/lock"
  "$ROOT/var/lib/apt/lists/lock"
  "$ROOT/var/cache/apt/archives/lock"
)

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# --- cloud-init: exit 0 = done, 2 = done with recoverable errors, anything else = failed ---
wait_cloud_init() {
  if ! command -v cloud-init >/dev/null 2>&1; then
    log "cloud-init not installed, skipping"
    return 0
  fi
  log "waiting for cloud-init to finish"
  local rc=0
  cloud-init status --wait >&2 || rc=$?
  case "$rc" in
    0) log "cloud-init finished" ;;
    2) warn "cloud-init finished with recoverable errors (exit 2); continuing" ;;
    *) die "cloud-init failed (exit $rc): read /var/log/cloud-init-output.log on the node; recreate the instance if it persists" ;;
  esac
}

# --- PIDs holding any apt/dpkg lock (fuser prints them on stdout); empty when all are free ---
lock_holders() {
  local f
  for f in "${LOCK_FILES[@]}"; do
    [[ -e "$f" ]] || continue
    fuser "$f" 2>/dev/null || true
  done
}

# --- bounded wait; on timeout only warn: every later apt call waits 600 s more itself ---
wait_apt_locks() {
  if ! command -v fuser >/dev/null 2>&1; then
    warn "fuser not found (package psmisc); relying on apt's own lock timeout"
    return 0
  fi
  local deadline=$((SECONDS + LOCK_WAIT_SECONDS)) holders
  holders=$(lock_holders)
  while [[ -n "${holders//[[:space:]]/}" ]]; do
    if ((SECONDS >= deadline)); then
      warn "apt/dpkg locks still held after ${LOCK_WAIT_SECONDS}s by PID(s)$(echo "$holders" | tr -s '[:space:]' ' '); continuing"
      return 0
    fi
    log "apt/dpkg lock held by PID(s)$(echo "$holders" | tr -s '[:space:]' ' ') (unattended-upgrades on first boot?), waiting"
    sleep "$POLL_SECONDS"
    holders=$(lock_holders)
  done
  log "apt/dpkg locks are free"
}

# --- for the record: which kernel and OS the later steps build against ---
log_system() {
  local os_release="$ROOT/etc/os-release" pretty="unknown OS" version=""
  if [[ -r "$os_release" ]]; then
    pretty=$(sed -n 's/^PRETTY_NAME=//p' "$os_release" | tr -d '"')
    version=$(sed -n 's/^VERSION_ID=//p' "$os_release" | tr -d '"')
  fi
  log "kernel $(uname -r), ${pretty:-unknown OS}"
  if [[ "$version" != "22.04" ]]; then
    warn "these scripts target Ubuntu 22.04 (found '${version:-unknown}'); later steps may fail"
  fi
}

main() {
  track_time
  wait_cloud_init
  wait_apt_locks
  log_system
}

main "$@"
