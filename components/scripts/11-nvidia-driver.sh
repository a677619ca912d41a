#!/usr/bin/env bash
# 11-nvidia-driver.sh: install the NVIDIA driver that fits the GPU family (and, optionally,
# the CUDA toolkit).
#
# Runs on: every GPU node, as root, after 10-driver-prepare.
# Inputs (environment):
#   GPU_DRIVER            tesla | grid
#   DRIVER_VERSION        tesla: the .run version, e.g. 535.129.03 (ignored for grid)
#   DRIVER_SHA256         tesla: the .run's SHA-256 when gpu-k8s knows a published one
#                         (components/facts/downloads.py); empty: the download is unverified
#   GRID_PLUGIN           grid: Cloud Assistant plugin, grid_driver_install or
#                         gpu_grid_driver_install; may be empty
#   INSTALL_CUDA_TOOLKIT  true | false (default false)
#   CUDA_TOOLKIT_VERSION  MAJOR.MINOR, e.g. 12.2 (only read when INSTALL_CUDA_TOOLKIT=true)
# stdin: one line, the GRID driver .run URL, or empty. Secret: never logged or put on argv.
# Knobs: POLL_SECONDS (retry pause, default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdout: one line, driver_version=<the version nvidia-smi reports now> (progress goes to stderr):
#   the GPU checks run again when it changes (a new GRID .run from another URL, components/kubeadm/bootstrap.py).
#
# tesla: NVIDIA's .run from us.download.nvidia.com, built with DKMS so it survives kernel
# updates. grid: never the Tesla .run (on vGPU it fails with "Unable to load the kernel
# module 'nvidia.ko'"); Aliyun's acs-plugin-manager, else the .run from the stdin URL.
set -euo pipefail

readonly STEP="11-nvidia-driver"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly GPU_DRIVER="${GPU_DRIVER:-}"
readonly DRIVER_VERSION="${DRIVER_VERSION:-}"
readonly DRIVER_SHA256="${DRIVER_SHA256:-}"
readonly GRID_PLUGIN="${GRID_PLUGIN:-}"
readonly INSTALL_CUDA_TOOLKIT="${INSTALL_CUDA_TOOLKIT:-false}"
readonly CUDA_TOOLKIT_VERSION="${CUDA_TOOLKIT_VERSION:-}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly CACHE="$ROOT/var/cache/gpu-k8s"
readonly INSTALLER_LOG="$ROOT/var/log/nvidia-installer.log"
readonly REBOOT_MARKER="$ROOT/run/gpu-k8s/reboot-pending"
readonly CUDA_KEYRING_URL="https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2204/x86_64/cuda-keyring_1.1-1_all.deb"
readonly NVIDIA_KO="Unable to load the kernel module 'nvidia.ko'"
GRID_URL=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

validate() {
  [[ -e "$REBOOT_MARKER" ]] && die "10-driver-prepare scheduled a reboot (to unload nouveau) that has not happened yet: wait until the node is back, then run pulumi up again"
  case "$GPU_DRIVER" in
    tesla)
      [[ "$DRIVER_VERSION" =~ ^[0-9]+(\.[0-9]+){1,2}$ ]] || die "DRIVER_VERSION must look like 535.129.03 (got '$DRIVER_VERSION')"
      [[ -z "$DRIVER_SHA256" || "$DRIVER_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "DRIVER_SHA256 must be 64 hex digits or empty (got '$DRIVER_SHA256')"
      ;;
    grid) [[ -z "$GRID_PLUGIN" || "$GRID_PLUGIN" =~ ^[a-z_]+$ ]] || die "GRID_PLUGIN must be a plugin name such as grid_driver_install (got '$GRID_PLUGIN')" ;;
    *) die "GPU_DRIVER must be tesla or grid (got '$GPU_DRIVER')" ;;
  esac
  case "$INSTALL_CUDA_TOOLKIT" in
    false) ;;
    true) [[ "$CUDA_TOOLKIT_VERSION" =~ ^[0-9]+\.[0-9]+$ ]] || die "CUDA_TOOLKIT_VERSION must look like 12.2 (got '$CUDA_TOOLKIT_VERSION')" ;;
    *) die "INSTALL_CUDA_TOOLKIT must be true or false (got '$INSTALL_CUDA_TOOLKIT')" ;;
  esac
}

driver_works() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; }

installed_version() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true
}

download() { # url dest: skipped when dest is already there (downloads land in dest.part first)
  if [[ -s "$2" ]]; then
    log "$(basename "$2") already downloaded, skipping"
    return 0
  fi
  mkdir -p "$(dirname "$2")"
  log "downloading $1"
  fetch_url -o "$2.part" "$1" || die "download of $1 failed: check the node's outbound network and the version"
  mv "$2.part" "$2"
}

verify_driver() { # the .run against DRIVER_SHA256; a mismatch is removed so a re-run downloads again
  local sum
  if [[ -z "$DRIVER_SHA256" ]]; then
    warn "$(basename "$1") is not checksum-verified (no published SHA-256 known for $DRIVER_VERSION)"
    return 0
  fi
  sum=$(checksum "$1")
  if [[ "$sum" != "$DRIVER_SHA256" ]]; then
    rm -f "$1"
    die "$(basename "$1") has SHA-256 $sum, expected $DRIVER_SHA256: the download is corrupt or not NVIDIA's; pulumi up downloads it again"
  fi
  log "$(basename "$1") SHA-256 verified"
}

# --- run a driver .run silently with DKMS; spot the "Tesla driver on a vGPU" failure ---
run_installer() {
  local out="$1.out"
  log "running $(basename "$1") --silent --dkms (takes a few minutes; output in ${out#"$ROOT"})"
  if sh "$1" --silent --dkms --no-questions --ui=none >"$out" 2>&1; then
    log "NVIDIA installer finished"
    return 0
  fi
  tail -n 20 "$out" >&2 || true
  if grep -qF "$NVIDIA_KO" "$out" "$INSTALLER_LOG" 2>/dev/null; then
    die "the installer says \"$NVIDIA_KO\" on this compute node: $(nvidia_ko_causes)"
  fi
  die "the NVIDIA installer failed: see its output above and /var/log/nvidia-installer.log on the node"
}

# --- why nvidia.ko did not load. The Tesla .run runs only on compute families (vGPU
# families get GRID, never this), so it is not "needs GRID": the kernel refused the module.
# Names what the node shows, then what to check. ---
nvidia_ko_causes() {
  local found=() nvrm
  if lsmod 2>/dev/null | grep -q '^nouveau'; then
    found+=("nouveau is still bound to the GPU (10-driver-prepare blacklists it and reboots once)")
  fi
  if mokutil --sb-state 2>/dev/null | grep -qi 'SecureBoot enabled'; then
    found+=("Secure Boot is enabled and refuses the unsigned module")
  fi
  nvrm=$({ dmesg 2>/dev/null || true; } | grep -E 'NVRM' | tail -n 3 | tr '\n' ' ' || true)
  if [[ "$nvrm" == *"is not supported by"* ]]; then
    found+=("the GPU is not supported by the $DRIVER_VERSION driver branch: set gpu-k8s:driverVersion to a branch that supports it")
  fi
  if ((${#found[@]} > 0)); then
    printf '%s; ' "${found[@]}"
  else
    printf 'none of the usual causes is visible; '
  fi
  printf "check 'dmesg | grep -i nvrm' (the kernel's reason), Secure Boot ('mokutil --sb-state'), nouveau still bound ('lsmod | grep nouveau') and that driver %s supports this GPU%s" \
    "$DRIVER_VERSION" "${nvrm:+ [dmesg: ${nvrm% }]}"
}

install_tesla() {
  local current name="NVIDIA-Linux-x86_64-${DRIVER_VERSION}.run"
  current=$(installed_version)
  if [[ "$current" == "$DRIVER_VERSION" ]]; then
    log "Tesla driver $DRIVER_VERSION already installed, skipping"
    return 0
  fi
  [[ -n "$current" ]] && log "replacing driver $current with $DRIVER_VERSION"
  download "https://us.download.nvidia.com/tesla/${DRIVER_VERSION}/${name}" "$CACHE/$name"
  verify_driver "$CACHE/$name"
  run_installer "$CACHE/$name"
}

grid_via_plugin() { # Aliyun's documented Cloud Assistant sequence
  local listed
  log "installing the GRID driver with acs-plugin-manager plugin $GRID_PLUGIN"
  listed=$(acs-plugin-manager --list --local 2>&1) || true
  if grep -q -- "$GRID_PLUGIN" <<<"$listed"; then
    acs-plugin-manager --remove --plugin "$GRID_PLUGIN" >&2 || warn "could not remove the cached $GRID_PLUGIN plugin"
  fi
  acs-plugin-manager --exec --plugin "$GRID_PLUGIN" >&2 ||
    die "acs-plugin-manager --exec --plugin $GRID_PLUGIN failed: see its output above"
}

grid_via_url() { # the URL goes to curl on stdin (-K -), never on argv or in logs
  local file="$CACHE/NVIDIA-Linux-x86_64-grid.run"
  [[ "$GRID_URL" =~ ^https?://[^[:space:]\"\\]+$ ]] || die "the GRID driver URL on stdin is not an http(s) URL (not shown)"
  if ! command -v dkms >/dev/null 2>&1; then
    apt_update
    # shellcheck disable=SC2046 # one package name per line
    apt_get install -y --no-install-recommends gcc make dkms $(kernel_headers) || die "apt-get install of the GRID .run build tools failed"
  fi
  mkdir -p "$CACHE"
  log "downloading the GRID driver from gpu-k8s:gridDriverUrl"
  printf 'url = "%s"\n' "$GRID_URL" | fetch_url -K - -o "$file" 2>/dev/null ||
    die "download of the GRID driver from gpu-k8s:gridDriverUrl failed (URL not shown): check the URL and the node's network"
  run_installer "$file"
  rm -f "$file"
}

install_grid() {
  if driver_works; then
    log "an NVIDIA driver is already loaded (nvidia-smi works), skipping the GRID install"
    return 0
  fi
  if [[ -n "$GRID_PLUGIN" ]] && command -v acs-plugin-manager >/dev/null 2>&1; then
    grid_via_plugin
  elif [[ -n "$GRID_URL" ]]; then
    grid_via_url
  else
    die "no way to install the GRID driver: Aliyun's Cloud Assistant plugin is missing; set gpu-k8s:gridDriverUrl"
  fi
}

install_cuda_toolkit() { # from NVIDIA's apt repo; the driver is not touched
  local pkg="cuda-toolkit-${CUDA_TOOLKIT_VERSION/./-}"
  if dpkg -s "$pkg" >/dev/null 2>&1; then
    log "$pkg already installed, skipping"
    return 0
  fi
  if ! dpkg -s cuda-keyring >/dev/null 2>&1; then
    download "$CUDA_KEYRING_URL" "$CACHE/cuda-keyring_1.1-1_all.deb"
    apt_get install -y "$CACHE/cuda-keyring_1.1-1_all.deb" || die "installing NVIDIA's cuda-keyring failed"
  fi
  apt_update
  apt_get install -y --no-install-recommends "$pkg" || die "apt-get install $pkg failed: is CUDA $CUDA_TOOLKIT_VERSION in NVIDIA's ubuntu2204 repo?"
}

main() {
  track_time
  validate
  if [[ "$GPU_DRIVER" == tesla ]]; then
    install_tesla
  else
    if [[ ! -t 0 ]]; then
      IFS= read -r GRID_URL || true
      GRID_URL="${GRID_URL%$'\r'}"
    fi
    install_grid
  fi
  driver_works || die "the $GPU_DRIVER driver is installed but nvidia-smi fails: check 'dmesg | grep -i nvrm' on the node; a reboot may be needed"
  nvidia-smi -pm 1 >&2 || warn "could not enable persistence mode (expected on some vGPU slices)"
  if [[ "$INSTALL_CUDA_TOOLKIT" == true ]]; then
    install_cuda_toolkit
  fi
  printf 'driver_version=%s\n' "$(installed_version)"
}

main "$@"
