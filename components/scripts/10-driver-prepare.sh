#!/usr/bin/env bash
# 10-driver-prepare.sh: get a GPU node ready for the NVIDIA driver.
#
# Runs on: every GPU node, as root, after 00-wait-boot.
# Inputs (environment):
#   GPU_DRIVER    tesla | grid (which driver 11-nvidia-driver installs)
# Knobs: POLL_SECONDS (retry pause, default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: one word, "reboot" when a reboot was scheduled, else "ok" (progress goes to
#         stderr). The Python side then waits on the deployer's machine (its "settle"
#         step) before dialling the node again, so no step runs into the reboot.
#
# Checks that an NVIDIA device is on the PCI bus, installs what the Tesla .run needs to
# build its kernel module (gcc, make, dkms, kernel headers; tesla only: Aliyun's GRID
# plugin brings its own, and 11 adds them for a GRID .run), and blacklists nouveau.
# Only where nouveau is loaded (lsmod) or bound to a PCI device (/sys/bus/pci/drivers/nouveau/
# holds the device's address) is anything more done: it is unloaded with modprobe -r, and if
# it is still loaded or bound after that, the step rebuilds the initramfs, writes
# /run/gpu-k8s/reboot-pending (gone after the reboot) and schedules a reboot in 5 s;
# 11-nvidia-driver refuses to run until the node is back (a safety net). A node without
# nouveau (Aliyun's GPU images often ship without it) never reboots. A nouveau built into the
# kernel (bound, but not a module in lsmod) cannot be blacklisted by modprobe.d: the step fails
# and says to set nouveau.modeset=0 on the kernel command line.
set -euo pipefail

readonly STEP="10-driver-prepare"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly GPU_DRIVER="${GPU_DRIVER:-}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly BLACKLIST="$ROOT/etc/modprobe.d/blacklist-nouveau.conf"
readonly BLACKLIST_TEXT=$'blacklist nouveau\noptions nouveau modeset=0'
readonly REBOOT_MARKER="$ROOT/run/gpu-k8s/reboot-pending"
readonly NOUVEAU_SYSFS="$ROOT/sys/bus/pci/drivers/nouveau"
INITRAMFS_DONE=false
REBOOTING=false

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# --- the seed's first check: lspci | grep -i nvidia ---
check_gpu() {
  if ! command -v lspci >/dev/null 2>&1; then
    log "lspci not found, installing pciutils"
    apt_update
    apt_get install -y pciutils || die "apt-get install pciutils failed: see the apt output above"
  fi
  local devices nvidia
  devices=$(lspci) || die "lspci failed: cannot list the PCI bus"
  nvidia=$(grep -i nvidia <<<"$devices") ||
    die "no NVIDIA GPU on the PCI bus of this instance: is the instance type a GPU type (ecs.gn*, ecs.vgn*, ecs.sgn*)?"
  log "found: ${nvidia//$'\n'/; }"
}

# --- the Tesla .run compiles nvidia.ko with DKMS: it needs a compiler and matching headers,
# now and after kernel upgrades (kernel_headers: the headers meta package too) ---
install_build_deps() {
  local pkg missing=() headers
  headers=$(kernel_headers)
  for pkg in gcc make dkms $headers; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    log "build tools and kernel headers already installed, skipping"
    return 0
  fi
  log "installing ${missing[*]}"
  apt_update
  apt_get install -y --no-install-recommends "${missing[@]}" ||
    die "apt-get install ${missing[*]} failed: see the apt output above (is the running kernel's headers package in the mirror?)"
}

update_initramfs() {
  [[ "$INITRAMFS_DONE" == true ]] && return 0
  log "rebuilding the initramfs so nouveau stays out at boot"
  update-initramfs -u >&2 || die "update-initramfs -u failed: see its output above"
  INITRAMFS_DONE=true
}

blacklist_nouveau() {
  if [[ -f "$BLACKLIST" && "$(<"$BLACKLIST")" == "$BLACKLIST_TEXT" ]]; then
    log "nouveau already blacklisted, skipping"
    return 0
  fi
  mkdir -p "$(dirname "$BLACKLIST")"
  printf '%s\n' "$BLACKLIST_TEXT" >"$BLACKLIST"
  log "blacklisted nouveau in ${BLACKLIST#"$ROOT"}"
  update_initramfs
}

# --- unload nouveau now, or reboot once without it: only where it is loaded or bound ---
nouveau_loaded() {
  local modules
  modules=$(lsmod) || die "lsmod failed: cannot list kernel modules"
  grep -q '^nouveau ' <<<"$modules"
}

nouveau_bound() { # a PCI device (e.g. 0000:00:07.0) that nouveau drives
  local dev
  for dev in "$NOUVEAU_SYSFS"/0000:*; do
    [[ -e "$dev" ]] && return 0
  done
  return 1
}

unload_nouveau() {
  local loaded=false bound=false
  nouveau_loaded && loaded=true
  nouveau_bound && bound=true
  if [[ "$loaded" == false && "$bound" == false ]]; then
    log "nouveau neither loaded nor bound to a device: no reboot needed"
    return 0
  fi
  if [[ "$loaded" == false ]]; then
    die "nouveau is built into this kernel and drives the GPU (${NOUVEAU_SYSFS#"$ROOT"}): add nouveau.modeset=0 to GRUB_CMDLINE_LINUX, run update-grub and reboot, or use an image whose nouveau is a module"
  fi
  if modprobe -r nouveau >&2 && ! nouveau_loaded && ! nouveau_bound; then
    log "unloaded nouveau"
    return 0
  fi
  warn "nouveau is in use and cannot be unloaded; rebooting without it"
  update_initramfs
  mkdir -p "$(dirname "$REBOOT_MARKER")"
  : >"$REBOOT_MARKER"
  systemd-run --on-active=5 systemctl reboot >&2 ||
    die "could not schedule a reboot (systemd-run failed): reboot the node by hand, then run pulumi up again"
  log "reboot scheduled in 5 s: the next steps wait until the node is back"
  REBOOTING=true
}

main() {
  track_time
  case "$GPU_DRIVER" in
    tesla | grid) ;;
    *) die "GPU_DRIVER must be tesla or grid (got '$GPU_DRIVER')" ;;
  esac
  check_gpu
  if [[ "$GPU_DRIVER" == tesla ]]; then
    install_build_deps
  fi
  blacklist_nouveau
  unload_nouveau
  if [[ "$REBOOTING" == true ]]; then echo reboot; else echo ok; fi
}

main "$@"
