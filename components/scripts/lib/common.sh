#!/usr/bin/env bash
# lib/common.sh: the helpers every node script shares. Sourced, never run.
#
# A script sources it right after its readonly constants with
#   # shellcheck source=lib/common.sh
#   source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline
# That works when the script runs in place (the tests). On the node each step is one
# self-contained file: components/remote.py render_script() replaces the marked line with
# this file's text (minus the shebang), and the plan writes out that rendered text.
#
# It sets no shell options (the caller has `set -euo pipefail`) and runs nothing at load
# time: it only defines functions. What each one needs from the caller:
#   log, warn, die         STEP (the log prefix, e.g. "20-container-runtime")
#   apt_get                nothing (APT_LOCK_WAIT, GPU_K8S_ROOT optional)
#   apt_update             POLL_SECONDS (pause unit between tries; 5 when unset);
#                          APT_MIRROR_HINT (optional: what to check besides the network
#                          when every try fails; default "its apt mirror")
#   fetch_url              curl's arguments (e.g. -o FILE URL, or -K - -o FILE)
#   verify_key             arguments: the downloaded key file, its published fingerprint, a name
#   kernel_headers         nothing (runs uname -r and dpkg-query)
#   checksum, same_content nothing
#   ca_public_key_hash     argument: a CA certificate file (prints sha256:<64 hex>)
#   any_file_lacks         arguments: an extended regex and the files
#   align_sandbox_image    arguments, not globals: the image repository, the Kubernetes
#                          version (e.g. 1.34.2) and the $ROOT-prefixed path of
#                          /etc/containerd/config.toml (40-kubeadm-init, 50-kubeadm-join)
# track_time:              nothing; call it first in main: on exit it prints one line
#                          "[gpu-k8s <step>] TIMING seconds=<s> rx_bytes=<n|unknown>" (stderr)
#                          (a step that sets its own EXIT trap calls report_time in it)
# Every message goes to stderr; nothing here prints on stdout except checksum and
# kernel_headers (and fetch_url when not given -o).

# --- progress and failures: "[gpu-k8s <step>] ..." on stderr; die exits 1 ---
log() { printf '[gpu-k8s %s] %s\n' "$STEP" "$*" >&2; }
warn() { log "WARNING: $*"; }
die() {
  log "ERROR: $*"
  exit 1
}

# --- apt: never prompts and keeps stdout clean. Steps run in parallel on a node (driver,
# runtime, packages): every apt-get of every step holds one gpu-k8s lock (flock(1), up to
# APT_LOCK_WAIT s, default 1800), so two steps never run apt-get at once; dpkg's own
# DPkg::Lock::Timeout (600 s) waits for unattended-upgrades, which does not take our lock.
# That option does not cover `apt-get update`'s /var/lib/apt/lists/lock: apt_update retries
# with a growing pause (POLL_SECONDS x try: 5+10+15+20 s by default) ---
apt_get() {
  local lock="${GPU_K8S_ROOT:-}/var/lib/gpu-k8s/apt.lock" wait="${APT_LOCK_WAIT:-1800}" rc=0
  mkdir -p "${lock%/*}"
  DEBIAN_FRONTEND=noninteractive flock -E 75 -w "$wait" "$lock" apt-get -o DPkg::Lock::Timeout=600 "$@" >&2 || rc=$?
  if ((rc == 75)); then
    warn "another gpu-k8s step held ${lock#"${GPU_K8S_ROOT:-}"} for over ${wait}s"
  fi
  return "$rc"
}

apt_update() {
  local try
  for try in 1 2 3 4 5; do
    apt_get update && return 0
    warn "apt-get update failed (try $try of 5)"
    ((try == 5)) || sleep $((${POLL_SECONDS:-5} * try))
  done
  die "apt-get update failed 5 times: check the node's outbound network and ${APT_MIRROR_HINT:-its apt mirror}"
}

# --- downloads: every curl has a connect timeout, stall detection (a try slower than 1 KiB/s
# for 60 s is aborted) and 5 bounded retries, so a stalled transfer fails within minutes
# instead of hanging until the step's 30-40 min timeout ---
fetch_url() {
  curl --connect-timeout 20 --speed-limit 1024 --speed-time 60 --retry 5 --retry-delay 5 --retry-all-errors -fsSL "$@"
}

# --- an apt repository key must be the publisher's: every primary key in the downloaded
# file has the published fingerprint (a mirror or proxy serving another key is refused) ---
verify_key() { # key_file published_fingerprint name
  local fprs fpr
  fprs=$(gpg --batch --show-keys --with-colons "$1" 2>/dev/null |
    awk -F: '$1 == "pub" { p = 1; next } p && $1 == "fpr" { print $10; p = 0 }') || true
  [[ -n "$fprs" ]] || die "the $3 key downloaded is not an OpenPGP key: check the mirror"
  for fpr in $fprs; do
    [[ "$fpr" == "$2" ]] ||
      die "the $3 key downloaded has fingerprint $fpr, not the published $2: refusing to trust it (check the mirror or proxy)"
  done
  log "$3 key fingerprint $2 verified"
}

# --- kernel headers that follow kernel upgrades: the running kernel's, plus the headers meta
# package of the installed kernel meta (linux-image-generic -> linux-headers-generic,
# linux-image-generic-hwe-22.04 -> linux-headers-generic-hwe-22.04; else the flavour's,
# e.g. linux-headers-generic). When unattended-upgrades brings a new kernel through its
# meta package, the headers meta brings the matching headers, and DKMS's kernel and header
# hooks (/etc/kernel/postinst.d/dkms, /etc/kernel/header_postinst.d/dkms) rebuild nvidia.ko
# for it, so the GPU is still there after the reboot. One package per line on stdout. ---
kernel_headers() {
  local release flavour meta
  release=$(uname -r)
  flavour=${release##*-}
  meta=$(dpkg-query -W -f='${Status} ${Package}\n' "linux-image-${flavour}*" 2>/dev/null |
    awk '$1 == "install" && $3 == "installed" { print $4 }' | head -n 1) || true
  meta=${meta#linux-image-}
  printf '%s\n' "linux-headers-$release" "linux-headers-${meta:-$flavour}"
}

# --- files: the SHA-256 of a file (empty when it is missing); whether it holds exactly $2 ---
checksum() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1 || true; }
same_content() { [[ -f "$1" && "$(<"$1")" == "$2" ]]; }

# --- a cluster CA's identity as kubeadm pins it (--discovery-token-ca-cert-hash): SHA-256 over
# the DER SubjectPublicKeyInfo of the CA key. `openssl pkey` gives the same bytes as the
# documented `openssl rsa -pubin` and also reads an ECDSA key (kubeadm encryptionAlgorithm ECDSA-*).
# Fails (status 1, nothing printed) when the file cannot be read as a certificate ---
ca_public_key_hash() { # ca_cert_file
  local digest
  digest=$(openssl x509 -pubkey -noout -in "$1" 2>/dev/null | openssl pkey -pubin -outform der 2>/dev/null |
    openssl dgst -sha256 -hex 2>/dev/null) || return 1
  digest="${digest##* }"
  [[ "$digest" =~ ^[0-9a-f]{64}$ ]] || return 1
  printf 'sha256:%s\n' "$digest"
}

any_file_lacks() { # extended_regex file...: whether some file has no line matching it
  local file
  for file in "${@:2}"; do
    grep -Eq "$1" "$file" || return 0
  done
  return 1
}

# --- containerd's pause image must be kubeadm's, from the same (reachable) registry. It is
# set in config.toml and in every imported drop-in of config.d/ that holds a sandbox key
# (nvidia-ctk >= 1.18 copies the whole CRI section of a version-2 config into
# config.d/99-nvidia.toml, and an import overrides config.toml) ---
align_sandbox_image() { # image_repository kubernetes_version containerd_config
  local repo="$1" version="$2" config="$3" pause before file key_re want_re
  local -a files=()
  pause=$(kubeadm config images list --image-repository "$repo" --kubernetes-version "v$version" 2>/dev/null | grep pause | head -n 1) ||
    die "kubeadm config images list found no pause image for v$version in $repo"
  [[ -f "$config" ]] || die "/etc/containerd/config.toml missing: run 20-container-runtime first"
  key_re="^[[:space:]]*(sandbox_image|sandbox)[[:space:]]*="
  files=("$config")
  for file in "$(dirname "$config")"/config.d/*.toml; do
    [[ -f "$file" ]] && grep -Eq "$key_re" "$file" && files+=("$file")
  done
  want_re="${key_re}[[:space:]]*[\"']${pause//./\\.}[\"']"
  if ! any_file_lacks "$want_re" "${files[@]}"; then
    log "containerd already uses $pause, skipping"
    return 0
  fi
  before=$(cat "${files[@]}" | sha256sum)
  sed -i -E "s#(${key_re}[[:space:]]*).*#\1\"$pause\"#" "${files[@]}"
  ! any_file_lacks "$want_re" "${files[@]}" || die "no sandbox_image key in /etc/containerd/config.toml to set to $pause"
  if [[ "$(cat "${files[@]}" | sha256sum)" != "$before" ]]; then
    log "containerd now uses $pause, restarting containerd"
    systemctl restart containerd >&2 || die "systemctl restart containerd failed: see 'journalctl -u containerd'"
  fi
}

# --- step timing (components/timings.py parses it into the `timings` output): wall seconds
# of the step (bash's EPOCHREALTIME) and the bytes the node received meanwhile, the sum of
# /proc/net/dev's receive column over every interface but lo. That counter is node-wide: steps
# that run at the same time on a node (driver, runtime, packages, prefetch) each count the
# others' downloads too. "unknown" when /proc/net/dev cannot be read ---
rx_bytes() {
  awk -F'[: ]+' 'NR > 2 && $2 != "lo" { sum += $3; n++ } END { if (n) printf "%d", sum }' \
    "${GPU_K8S_ROOT:-}/proc/net/dev" 2>/dev/null || true
}

report_time() { # always succeeds: the step's exit status stays its own
  local rx=unknown rx1 seconds
  rx1=$(rx_bytes)
  if [[ -n "${TIMING_RX0:-}" && -n "$rx1" ]]; then rx=$((rx1 - TIMING_RX0)); fi
  seconds=$(awk -v a="${TIMING_T0:-$EPOCHREALTIME}" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') || seconds=unknown
  printf '[gpu-k8s %s] TIMING seconds=%s rx_bytes=%s\n' "$STEP" "$seconds" "$rx" >&2 || true
}

track_time() { # a step with its own EXIT trap calls report_time in it, after its cleanup
  TIMING_T0=$EPOCHREALTIME
  TIMING_RX0=$(rx_bytes)
  trap report_time EXIT
}
