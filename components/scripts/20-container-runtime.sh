#!/usr/bin/env bash
# 20-container-runtime.sh: containerd with the NVIDIA Container Toolkit as its DEFAULT
# runtime (the seed had to set default_runtime_name by hand), plus optional Docker.
#
# Runs on: every node, as root, after 00-wait-boot (on GPU nodes it may run while the
# driver steps run: every apt call waits for the dpkg lock).
# Inputs (environment):
#   CONTAINER_TOOLKIT_VERSION  e.g. 1.17.8 (pinned packages <V>-1)
#   PACKAGE_MIRROR             aliyun | upstream (NVIDIA toolkit and Docker apt repos)
#   REGISTRY_MIRRORS           "registry=url;registry=url" (containerd hosts.toml); may be empty
#   INSTALL_DOCKER             true | false (default false)
# Knobs: POLL_SECONDS (retry pause, default 5); GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: nothing (progress goes to stderr).
set -euo pipefail

readonly STEP="20-container-runtime"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly TOOLKIT_VERSION="${CONTAINER_TOOLKIT_VERSION:-}"
readonly PACKAGE_MIRROR="${PACKAGE_MIRROR:-}"
readonly REGISTRY_MIRRORS="${REGISTRY_MIRRORS:-}"
readonly INSTALL_DOCKER="${INSTALL_DOCKER:-false}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly APT_MIRROR_HINT="gpu-k8s:kubernetesMirror"
readonly CONFIG="$ROOT/etc/containerd/config.toml"
readonly CERTS_DIR="$ROOT/etc/containerd/certs.d"
readonly DOCKER_CONFIG="$ROOT/etc/docker/daemon.json"
readonly NVIDIA_KEYRING=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
readonly DOCKER_KEYRING=/etc/apt/keyrings/docker.gpg
readonly MANAGED="# managed by gpu-k8s"
readonly CURL=(curl --retry 5 --retry-delay 5 --retry-all-errors -fsSL)
readonly NVIDIA_DEFAULT_RE="^[[:space:]]*default_runtime_name[[:space:]]*=[[:space:]]*[\"']nvidia[\"']"
if [[ "$PACKAGE_MIRROR" == aliyun ]]; then
  readonly TOOLKIT_REPO=https://mirrors.aliyun.com/libnvidia-container DOCKER_REPO=https://mirrors.aliyun.com/docker-ce/linux/ubuntu
else
  readonly TOOLKIT_REPO=https://nvidia.github.io/libnvidia-container DOCKER_REPO=https://download.docker.com/linux/ubuntu
fi
TMP=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

apt_install() { # keep our /etc/containerd/config.toml when containerd.io brings its own
  apt_get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" ||
    die "apt-get install $* failed: see the apt output above; pulumi up retries the step"
}

# --- a signed apt source: the dearmored key plus one deb line ---
add_apt_repo() { # key_url keyring list_file deb_line
  if [[ ! -s "$ROOT$2" ]]; then
    "${CURL[@]}" -o "$TMP/key" "$1" || die "download of $1 failed: check the node's network or gpu-k8s:kubernetesMirror"
    mkdir -p "$(dirname "$ROOT$2")"
    gpg --batch --yes --dearmor -o "$ROOT$2" "$TMP/key" || die "gpg --dearmor of $1 failed"
  fi
  same_content "$ROOT$3" "$4" || printf '%s\n' "$4" >"$ROOT$3"
}

install_docker() { # docker-ce brings containerd.io, which then replaces Ubuntu's containerd
  if command -v docker >/dev/null 2>&1; then
    log "docker already installed, skipping"
    return 0
  fi
  local codename
  codename=$(sed -n 's/^VERSION_CODENAME=//p' "$ROOT/etc/os-release" 2>/dev/null | tr -d '"') || true
  [[ -n "$codename" ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
  add_apt_repo "$DOCKER_REPO/gpg" "$DOCKER_KEYRING" /etc/apt/sources.list.d/docker.list \
    "deb [arch=amd64 signed-by=$DOCKER_KEYRING] $DOCKER_REPO $codename stable"
  apt_update
  apt_install docker-ce docker-ce-cli containerd.io
}

install_containerd() {
  if command -v containerd >/dev/null 2>&1; then
    log "containerd already installed, skipping"
    return 0
  fi
  apt_update
  apt_install containerd
}

# --- default config if missing (or containerd.io's stub with the CRI plugin disabled) ---
ensure_config() {
  if [[ -f "$CONFIG" ]] && grep -Eq 'io\.containerd\.(grpc\.v1\.cri|cri\.v1)' "$CONFIG" &&
    ! grep -Eq '^disabled_plugins[[:space:]]*=.*"cri"' "$CONFIG"; then
    log "containerd config exists, keeping it"
    return 0
  fi
  log "writing containerd's default config"
  containerd config default >"$TMP/config.toml" || die "containerd config default failed: is containerd installed?"
  mkdir -p "$(dirname "$CONFIG")"
  mv "$TMP/config.toml" "$CONFIG"
}

# --- kubelet uses the systemd cgroup driver; registry mirrors live in certs.d ---
patch_config() {
  sed -i -E -e 's/^([[:space:]]*SystemdCgroup[[:space:]]*=[[:space:]]*)false/\1true/' \
    -e "s#^([[:space:]]*config_path[[:space:]]*=[[:space:]]*)(\"\"|'')#\1\"/etc/containerd/certs.d\"#" "$CONFIG"
  grep -Eq '^[[:space:]]*SystemdCgroup[[:space:]]*=[[:space:]]*true' "$CONFIG" ||
    die "could not set SystemdCgroup = true in ${CONFIG#"$ROOT"}: edit the runc options by hand"
  grep -Eq '^[[:space:]]*config_path[[:space:]]*=.*/etc/containerd/certs\.d' "$CONFIG" ||
    die "could not set config_path = \"/etc/containerd/certs.d\" in the CRI registry section of ${CONFIG#"$ROOT"}"
}

write_mirrors() { # one hosts.toml per registry; stale ones we wrote are removed
  local entry registry url server toml text wanted=" " dir
  local -a entries=()
  IFS=';' read -r -a entries <<<"$REGISTRY_MIRRORS"
  for entry in "${entries[@]}"; do
    [[ -n "$entry" ]] || continue
    registry="${entry%%=*}" url="${entry#*=}"
    [[ "$entry" == *=* && "$registry" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$ && "$url" =~ ^https?://[^[:space:]\"\\]+$ ]] ||
      die "bad REGISTRY_MIRRORS entry '$entry': expected registry=https://mirror"
    server="https://$registry"
    [[ "$registry" == docker.io ]] && server="https://registry-1.docker.io"
    wanted+="$registry " toml="$CERTS_DIR/$registry/hosts.toml"
    text=$(printf '%s\nserver = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]' "$MANAGED" "$server" "$url")
    if ! same_content "$toml" "$text"; then
      mkdir -p "$(dirname "$toml")" && printf '%s\n' "$text" >"$toml"
      log "pulls from $registry go through $url"
    fi
  done
  for dir in "$CERTS_DIR"/*/; do
    registry=$(basename "$dir")
    if [[ -f "$dir/hosts.toml" && "$wanted" != *" $registry "* ]] && grep -qxF "$MANAGED" "$dir/hosts.toml"; then
      rm -f "$dir/hosts.toml" && log "removed the mirror for $registry"
    fi
  done
}

install_toolkit() {
  local current="" v="$TOOLKIT_VERSION-1"
  if command -v nvidia-ctk >/dev/null 2>&1; then
    current=$(nvidia-ctk --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -n 1) || true
  fi
  if [[ "$current" == "$TOOLKIT_VERSION" ]]; then
    log "NVIDIA Container Toolkit $TOOLKIT_VERSION already installed, skipping"
    return 0
  fi
  add_apt_repo "$TOOLKIT_REPO/gpgkey" "$NVIDIA_KEYRING" /etc/apt/sources.list.d/nvidia-container-toolkit.list \
    "deb [signed-by=$NVIDIA_KEYRING] $TOOLKIT_REPO/stable/deb/amd64 /"
  apt_update
  apt_install --allow-downgrades "nvidia-container-toolkit=$v" "nvidia-container-toolkit-base=$v" \
    "libnvidia-container-tools=$v" "libnvidia-container1=$v"
}

configure_nvidia_default() { # nvidia-ctk without --set-as-default leaves runc the default
  if grep -Eq "$NVIDIA_DEFAULT_RE" "$CONFIG" && grep -q 'runtimes\.nvidia\]' "$CONFIG"; then
    log "nvidia is already containerd's default runtime, skipping"
    return 0
  fi
  nvidia-ctk runtime configure --runtime=containerd --set-as-default --config="$CONFIG" >&2 ||
    die "nvidia-ctk runtime configure --runtime=containerd failed: see its output above"
  grep -Eq "$NVIDIA_DEFAULT_RE" "$CONFIG" ||
    die "${CONFIG#"$ROOT"} still lacks default_runtime_name = \"nvidia\" after nvidia-ctk --set-as-default: pods would run with runc and see no GPU; set it under the CRI containerd section by hand or upgrade the toolkit"
}

restart_if_changed() { # service file checksum_before
  if [[ "$(checksum "$2")" != "$3" ]]; then
    log "${2#"$ROOT"} changed, restarting $1"
    systemctl restart "$1" >&2 || die "systemctl restart $1 failed: see 'journalctl -u $1' on the node"
  elif ! systemctl is-active --quiet "$1"; then
    systemctl enable --now "$1" >&2 || die "systemctl enable --now $1 failed: see 'journalctl -u $1' on the node"
  else
    log "${2#"$ROOT"} unchanged, not restarting $1"
  fi
}

configure_docker() {
  local before
  before=$(checksum "$DOCKER_CONFIG")
  if grep -q '"nvidia"' "$DOCKER_CONFIG" 2>/dev/null; then
    log "docker already has the nvidia runtime, skipping"
  else
    nvidia-ctk runtime configure --runtime=docker --config="$DOCKER_CONFIG" >&2 ||
      die "nvidia-ctk runtime configure --runtime=docker failed: see its output above"
  fi
  restart_if_changed docker "$DOCKER_CONFIG" "$before"
}

main() {
  [[ "$TOOLKIT_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CONTAINER_TOOLKIT_VERSION must look like 1.17.8 (got '$TOOLKIT_VERSION')"
  [[ "$PACKAGE_MIRROR" == aliyun || "$PACKAGE_MIRROR" == upstream ]] || die "PACKAGE_MIRROR must be aliyun or upstream (got '$PACKAGE_MIRROR')"
  [[ "$INSTALL_DOCKER" == true || "$INSTALL_DOCKER" == false ]] || die "INSTALL_DOCKER must be true or false (got '$INSTALL_DOCKER')"
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"' EXIT
  if [[ "$INSTALL_DOCKER" == true ]]; then
    install_docker
  fi
  install_containerd
  local before
  before=$(checksum "$CONFIG")
  ensure_config
  install_toolkit
  configure_nvidia_default
  patch_config
  write_mirrors
  restart_if_changed containerd "$CONFIG" "$before"
  if [[ "$INSTALL_DOCKER" == true ]]; then
    configure_docker
  fi
}

main "$@"
