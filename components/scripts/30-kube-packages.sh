#!/usr/bin/env bash
# 30-kube-packages.sh: kernel settings for Kubernetes, and pinned kubelet/kubeadm/kubectl.
#
# Runs on: every node, as root, after 20-container-runtime.
# Inputs (environment):
#   KUBERNETES_VERSION  e.g. 1.34.2 (packages <V>-1.1 from the v<MAJOR.MINOR> repo)
#   PACKAGE_MIRROR      aliyun (mirrors.aliyun.com/kubernetes-new) | upstream (pkgs.k8s.io)
# Knobs: POLL_SECONDS (retry pause, default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: nothing (progress goes to stderr).
set -euo pipefail

readonly STEP="30-kube-packages"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly VERSION="${KUBERNETES_VERSION:-}"
readonly PACKAGE_MIRROR="${PACKAGE_MIRROR:-}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly APT_MIRROR_HINT="gpu-k8s:kubernetesMirror"
readonly MODULES_CONF="$ROOT/etc/modules-load.d/k8s.conf"
readonly SYSCTL_CONF="$ROOT/etc/sysctl.d/k8s.conf"
readonly KEYRING=/etc/apt/keyrings/kubernetes-apt-keyring.gpg
readonly LIST=/etc/apt/sources.list.d/kubernetes.list
# The pkgs.k8s.io key (isv:kubernetes OBS Project), the same primary key for every minor's
# Release.key (gpg output quoted in kubernetes/kubernetes#128609); Aliyun mirrors it as is.
readonly K8S_KEY_FPR=DE15B14486CD377B9E876E1A234654DA9A296436
readonly PACKAGES=(kubelet kubeadm kubectl)

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# --- overlay + br_netfilter now and at every boot ---
load_modules() {
  local module
  if ! same_content "$MODULES_CONF" $'overlay\nbr_netfilter'; then
    mkdir -p "$(dirname "$MODULES_CONF")"
    printf 'overlay\nbr_netfilter\n' >"$MODULES_CONF"
  fi
  for module in overlay br_netfilter; do
    if [[ -d "$ROOT/sys/module/$module" ]]; then
      log "kernel module $module already loaded"
    else
      modprobe "$module" || die "modprobe $module failed: the kernel lacks $module"
    fi
  done
}

# --- bridged traffic through iptables, and IP forwarding ---
set_sysctls() {
  local wanted=$'net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1'
  if same_content "$SYSCTL_CONF" "$wanted" && same_content "$ROOT/proc/sys/net/ipv4/ip_forward" 1 &&
    same_content "$ROOT/proc/sys/net/bridge/bridge-nf-call-iptables" 1; then
    log "sysctls already set, skipping"
    return 0
  fi
  mkdir -p "$(dirname "$SYSCTL_CONF")"
  printf '%s\n' "$wanted" >"$SYSCTL_CONF"
  sysctl -p "$SYSCTL_CONF" >&2 || die "sysctl -p ${SYSCTL_CONF#"$ROOT"} failed (is br_netfilter loaded?)"
}

# --- the kubelet refuses to start with swap on ---
disable_swap() {
  local active
  active=$(swapon --show --noheadings 2>/dev/null) || true
  if [[ -n "$active" ]]; then
    swapoff -a || die "swapoff -a failed"
    log "swap turned off"
  fi
  if [[ -f "$ROOT/etc/fstab" ]] && grep -Eq '^[^#].*[[:space:]]swap[[:space:]]' "$ROOT/etc/fstab"; then
    sed -i -E 's/^([^#].*[[:space:]]swap[[:space:]].*)$/# \1/' "$ROOT/etc/fstab"
    log "commented out swap in /etc/fstab"
  fi
}

add_repo() { # one repo per minor version: pkgs.k8s.io layout on both mirrors
  local minor="${VERSION%.*}" base line
  case "$PACKAGE_MIRROR" in
    aliyun) base="https://mirrors.aliyun.com/kubernetes-new/core/stable/v${minor}/deb/" ;;
    *) base="https://pkgs.k8s.io/core:/stable:/v${minor}/deb/" ;;
  esac
  if [[ ! -s "$ROOT$KEYRING" ]]; then
    mkdir -p "$(dirname "$ROOT$KEYRING")"
    fetch_url -o "$ROOT$KEYRING.asc" "${base}Release.key" || die "download of ${base}Release.key failed: check the network or gpu-k8s:kubernetesMirror"
    verify_key "$ROOT$KEYRING.asc" "$K8S_KEY_FPR" Kubernetes
    gpg --batch --yes --dearmor -o "$ROOT$KEYRING" "$ROOT$KEYRING.asc" || die "gpg --dearmor of the Kubernetes key failed"
    rm -f "$ROOT$KEYRING.asc"
  fi
  line="deb [signed-by=$KEYRING] $base /"
  same_content "$ROOT$LIST" "$line" || printf '%s\n' "$line" >"$ROOT$LIST"
}

install_packages() {
  local current
  current=$(kubeadm version -o short 2>/dev/null) || true
  if [[ "$current" == "v$VERSION" ]]; then
    log "kubeadm v$VERSION already installed, skipping"
    return 0
  fi
  # A node already in a cluster: new packages would leave the control plane on the old
  # version (init/join skip a set-up node) and a kubelet newer than its API server breaks
  # Kubernetes' version-skew policy. Upgrading is kubeadm's job, node by node.
  if [[ -n "$current" && -e "$ROOT/etc/kubernetes/kubelet.conf" ]]; then
    die "this node runs Kubernetes $current and is in a cluster; refusing to install $VERSION packages under it." \
      "Set gpu-k8s:kubernetesVersion back to ${current#v}, or upgrade with kubeadm (kubeadm upgrade plan/apply, node by node)," \
      "or rebuild: make down && make up"
  fi
  add_repo
  apt_update
  apt_get install -y --allow-downgrades --allow-change-held-packages "${PACKAGES[@]/%/=$VERSION-1.1}" ||
    die "apt-get install of kubelet/kubeadm/kubectl $VERSION-1.1 failed: is $VERSION published in the mirror?"
  apt-mark -o DPkg::Lock::Timeout=600 hold "${PACKAGES[@]}" >&2 || die "apt-mark hold ${PACKAGES[*]} failed"
}

main() {
  track_time
  [[ "$VERSION" =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "KUBERNETES_VERSION must look like 1.34.2 (got '$VERSION')"
  [[ "$PACKAGE_MIRROR" == aliyun || "$PACKAGE_MIRROR" == upstream ]] || die "PACKAGE_MIRROR must be aliyun or upstream (got '$PACKAGE_MIRROR')"
  load_modules
  set_sysctls
  disable_swap
  install_packages
}

main "$@"
