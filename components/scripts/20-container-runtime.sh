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
#   NVIDIA_RUNTIME             true | false (default true): false on a node without a GPU (a
#                              dedicated control plane): containerd only, runc stays the default
#   GPU_ISOLATION              true | false (default false): the toolkit ignores NVIDIA_VISIBLE_DEVICES
#                              in unprivileged containers and takes the device plugin's list as
#                              volume mounts; false: NVIDIA's defaults (components/gpu/device_plugin.py)
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
readonly NVIDIA_RUNTIME="${NVIDIA_RUNTIME:-true}"
readonly GPU_ISOLATION="${GPU_ISOLATION:-false}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly APT_MIRROR_HINT="gpu-k8s:kubernetesMirror"
readonly CONFIG="$ROOT/etc/containerd/config.toml"
# The toolkit's own config (nvidia-ctk config's default --config-file); its isolation keys are
# top-level (NVIDIA/nvidia-container-toolkit v1.17.8 internal/config/config.go).
readonly TOOLKIT_CONFIG="$ROOT/etc/nvidia-container-runtime/config.toml"
readonly ENVVAR_KEY=accept-nvidia-visible-devices-envvar-when-unprivileged
readonly MOUNTS_KEY=accept-nvidia-visible-devices-as-volume-mounts
# nvidia-ctk >= 1.18 writes its runtime here (its default: defaultContainerdDropInConfigFilePath
# in NVIDIA/nvidia-container-toolkit v1.18.0 cmd/nvidia-ctk/runtime/configure/configure.go;
# passed explicitly so that the $ROOT prefix holds) and only adds
# `imports = ["/etc/containerd/config.d/*.toml"]` to config.toml. Imported files override
# the main one and maps merge per key
# (containerd-config.toml(5), "imports"): the drop-in's copy of the CRI plugin section
# replaces config.toml's (seen with `config dump` of 1.7.28: its sandbox_image and
# config_path win), so both files get our settings and the merged result is checked.
readonly DROP_IN="$ROOT/etc/containerd/config.d/99-nvidia.toml"
readonly CERTS_PATH=/etc/containerd/certs.d
# containerd.io (Docker's package) is pinned to the 2.x tested with the real binary
# (tests/scripts/test_runtime_real.py): 2.0.0-2.0.6 and 2.1.0-2.1.4 leave SystemdCgroup out of
# `config default`. An apt preferences pin (apt_preferences(5), version glob) holds it.
readonly CONTAINERD_IO_VERSION=2.1.5
readonly CONTAINERD_IO_PIN="$ROOT/etc/apt/preferences.d/gpu-k8s-containerd-io"
# The CRI plugin's runtime section: config version 2 (containerd 1.7) and 3 (2.x).
readonly CRI_RUNTIME_RE='io\.containerd\.(grpc\.v1\.cri|cri\.v1\.runtime)'
readonly CRI_REGISTRY_RE='io\.containerd\.(grpc\.v1\.cri|cri\.v1\.images)'
readonly CERTS_DIR="$ROOT/etc/containerd/certs.d"
readonly DOCKER_CONFIG="$ROOT/etc/docker/daemon.json"
readonly NVIDIA_KEYRING=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
readonly DOCKER_KEYRING=/etc/apt/keyrings/docker.gpg
readonly MANAGED="# managed by gpu-k8s"
# Published key fingerprints: NVIDIA's libnvidia-container key (gpg on
# https://nvidia.github.io/libnvidia-container/gpgkey, quoted in NVIDIA/libnvidia-container#280
# and NVIDIA/nvidia-container-toolkit#650), Docker's (docs.docker.com install guide,
# docker/docs#11990). Aliyun's mirrors serve the same keys.
readonly NVIDIA_KEY_FPR=C95B321B61E88C1809C4F759DDCAE044F796ECB0
readonly DOCKER_KEY_FPR=9DC858229FC7DD38854AE2D88D81803C0EBFCD88
if [[ "$PACKAGE_MIRROR" == aliyun ]]; then
  readonly TOOLKIT_REPO=https://mirrors.aliyun.com/libnvidia-container DOCKER_REPO=https://mirrors.aliyun.com/docker-ce/linux/ubuntu
else
  readonly TOOLKIT_REPO=https://nvidia.github.io/libnvidia-container DOCKER_REPO=https://download.docker.com/linux/ubuntu
fi
TMP="" MERGED="" PROBLEMS="" CHECKED=""

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

apt_install() { # keep our /etc/containerd/config.toml when containerd.io brings its own
  apt_get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" ||
    die "apt-get install $* failed: see the apt output above; pulumi up retries the step"
}

# --- a signed apt source: the dearmored key plus one deb line ---
add_apt_repo() { # key_url keyring list_file deb_line fingerprint name
  if [[ ! -s "$ROOT$2" ]]; then
    fetch_url -o "$TMP/key" "$1" || die "download of $1 failed: check the node's network or gpu-k8s:kubernetesMirror"
    verify_key "$TMP/key" "$5" "$6"
    mkdir -p "$(dirname "$ROOT$2")"
    gpg --batch --yes --dearmor -o "$ROOT$2" "$TMP/key" || die "gpg --dearmor of $1 failed"
  fi
  same_content "$ROOT$3" "$4" || printf '%s\n' "$4" >"$ROOT$3"
}

pin_containerd_io() {
  local text
  text=$(printf 'Explanation: %s (20-container-runtime)\nPackage: containerd.io\nPin: version %s-*\nPin-Priority: 1001' \
    "$MANAGED" "$CONTAINERD_IO_VERSION")
  same_content "$CONTAINERD_IO_PIN" "$text" && return 0
  mkdir -p "$(dirname "$CONTAINERD_IO_PIN")" && printf '%s\n' "$text" >"$CONTAINERD_IO_PIN"
  log "containerd.io pinned to $CONTAINERD_IO_VERSION"
}

install_docker() { # docker-ce brings containerd.io, which then replaces Ubuntu's containerd
  if command -v docker >/dev/null 2>&1; then
    log "docker already installed, skipping"
    return 0
  fi
  local codename version
  codename=$(sed -n 's/^VERSION_CODENAME=//p' "$ROOT/etc/os-release" 2>/dev/null | tr -d '"') || true
  [[ -n "$codename" ]] || die "cannot read VERSION_CODENAME from /etc/os-release"
  add_apt_repo "$DOCKER_REPO/gpg" "$DOCKER_KEYRING" /etc/apt/sources.list.d/docker.list \
    "deb [arch=amd64 signed-by=$DOCKER_KEYRING] $DOCKER_REPO $codename stable" "$DOCKER_KEY_FPR" Docker
  pin_containerd_io
  apt_update
  apt_install docker-ce docker-ce-cli containerd.io
  version=$(containerd --version 2>/dev/null) || true
  [[ " $version " == *" $CONTAINERD_IO_VERSION "* || " $version " == *" v$CONTAINERD_IO_VERSION "* ]] ||
    die "containerd.io $CONTAINERD_IO_VERSION was pinned but containerd reports '$version': the Docker repo lacks that version; see 'apt-cache policy containerd.io'"
}

install_containerd() {
  if command -v containerd >/dev/null 2>&1; then
    log "containerd already installed, skipping"
    return 0
  fi
  apt_update
  apt_install containerd
}

# --- a config nvidia-ctk can build on: the CRI plugin on, and a runc runtime table ---
config_usable() {
  [[ -f "$CONFIG" ]] || return 1
  ! grep -Eq "^[[:space:]]*disabled_plugins[[:space:]]*=.*[\"']cri[\"']" "$CONFIG" || return 1
  grep -Eq "^[[:space:]]*\[plugins\.[\"']${CRI_RUNTIME_RE}[\"']\.containerd\.runtimes\.[\"']?runc[\"']?\][[:space:]]*$" "$CONFIG"
}

# containerd.io's stub (CRI disabled) and Debian's 9-line config (no runc table, so
# nvidia-ctk cannot infer runc's options) are replaced by `config default`, kept as a backup.
ensure_config() {
  if config_usable; then
    log "containerd config has the CRI plugin and a runc runtime, keeping it"
    return 0
  fi
  containerd config default >"$TMP/config.toml" || die "containerd config default failed: is containerd installed?"
  mkdir -p "$(dirname "$CONFIG")"
  if [[ -f "$CONFIG" ]]; then
    local backup
    backup="$CONFIG.gpu-k8s-$(date -u +%Y%m%dT%H%M%SZ).bak"
    cp -p "$CONFIG" "$backup"
    log "${CONFIG#"$ROOT"} has the CRI plugin off or no runc runtime: saved it as ${backup#"$ROOT"}, writing containerd's default config"
  else
    log "writing containerd's default config"
  fi
  mv "$TMP/config.toml" "$CONFIG"
}

replace_if_changed() { # file new_text_file: rewrite in place only when the bytes differ
  cmp -s "$2" "$1" || cat "$2" >"$1"
}

# --- kubelet uses the systemd cgroup driver: SystemdCgroup = true in the runc and nvidia
# runtime options (set when the key is there, added when it is not: containerd 2.0.0-2.0.6
# and 2.1.0-2.1.4 leave it out of `config default`; containerd/containerd#12244 put it back,
# released in 2.0.7 and 2.1.5) ---
set_systemd_cgroup() { # file
  awk '
    function flush() {
      if (inopt && !seen) printf "%sSystemdCgroup = true\n", indent
      inopt = 0; seen = 0
    }
    function blanks() { for (; nb > 0; nb--) print "" }
    /^[[:space:]]*$/ { nb++; next }
    /^[[:space:]]*\[/ {
      flush(); blanks()
      if ($0 ~ /containerd\.runtimes\.["\047]?(runc|nvidia)["\047]?\.options\][[:space:]]*$/) {
        inopt = 1; match($0, /^[[:space:]]*/); indent = substr($0, 1, RLENGTH) "  "
      }
      print; next
    }
    inopt && /^[[:space:]]*SystemdCgroup[[:space:]]*=/ { sub(/=.*/, "= true"); seen = 1 }
    { blanks(); print }
    END { flush(); blanks() }
  ' "$1" >"$TMP/edit" || die "could not edit ${1#"$ROOT"}"
  replace_if_changed "$1" "$TMP/edit"
}

# A runc table without an options table (a hand-written config): add one at the end.
ensure_runc_options() {
  local header
  grep -Eq "containerd\.runtimes\.[\"']?runc[\"']?\.options\][[:space:]]*$" "$CONFIG" && return 0
  header=$(sed -n -E "s/^[[:space:]]*\[(plugins\.[\"']${CRI_RUNTIME_RE}[\"']\.containerd\.runtimes\.[\"']?runc[\"']?)\][[:space:]]*$/\1/p" "$CONFIG" | head -n 1)
  [[ -n "$header" ]] || die "no runc runtime table in ${CONFIG#"$ROOT"}"
  printf '\n[%s.options]\n  SystemdCgroup = true\n' "$header" >>"$CONFIG"
}

# A config whose CRI registry table has no config_path key (or no such table): add it.
ensure_registry_config_path() {
  local table='plugins."io.containerd.grpc.v1.cri".registry' # config version 2 (1.7)
  if grep -Eq '^[[:space:]]*version[[:space:]]*=[[:space:]]*3' "$CONFIG"; then
    table="plugins.'io.containerd.cri.v1.images'.registry"
  fi
  awk -v table="$table" -v line="config_path = \"$CERTS_PATH\"" '
    function name(s) { gsub(/^[[:space:]]*\[|\][[:space:]]*$|["\047]/, "", s); return s }
    BEGIN { want = name("[" table "]") }
    /^[[:space:]]*\[/ {
      if (in_table && !seen) { print "  " line; seen = 1 }
      in_table = (name($0) == want); found = found || in_table
    }
    in_table && /^[[:space:]]*config_path[[:space:]]*=/ { seen = 1 }
    { print }
    END {
      if (in_table && !seen) print "  " line
      else if (!found) printf "\n[%s]\n  %s\n", table, line
    }
  ' "$CONFIG" >"$TMP/edit" || die "could not edit ${CONFIG#"$ROOT"}"
  replace_if_changed "$CONFIG" "$TMP/edit"
}

# --- registry mirrors live in certs.d: config_path of the CRI registry (and transfer) ---
set_config_path() { # file
  sed -E "s#^([[:space:]]*config_path[[:space:]]*=[[:space:]]*)(\"\"|'')#\1\"$CERTS_PATH\"#" "$1" >"$TMP/edit" ||
    die "could not edit ${1#"$ROOT"}"
  replace_if_changed "$1" "$TMP/edit"
}

patch_config() { # file: what we set, in whichever file holds it
  set_systemd_cgroup "$1"
  set_config_path "$1"
}

# --- the config containerd really runs with (config.toml plus its imports), flattened
# to "table.key=value" lines with the TOML quotes removed ---
read_merged() {
  local dump
  if ! dump=$(containerd --config "$CONFIG" config dump 2>&1); then
    MERGED=""
    warn "containerd --config ${CONFIG#"$ROOT"} config dump failed: ${dump##*$'\n'}"
    return 0
  fi
  MERGED=$(awk '
    /^[[:space:]]*\[/ { t = $0; gsub(/^[[:space:]]*\[+|\]+[[:space:]]*$/, "", t); gsub(/["\047]/, "", t); next }
    /^[[:space:]]*[A-Za-z0-9_."\047-]+[[:space:]]*=/ {
      k = $0; sub(/[[:space:]]*=.*/, "", k); gsub(/^[[:space:]]+|["\047]/, "", k)
      v = $0; sub(/^[^=]*=[[:space:]]*/, "", v); gsub(/["\047]/, "", v); sub(/[[:space:]]+$/, "", v)
      print t "." k "=" v
    }' <<<"$dump")
}

merged_lacks() { # "table.key=value" regex, description: prints the description when absent
  grep -Eq "^plugins\.$1\$" <<<"$MERGED" || printf '%s\n' "$2"
}

# PROBLEMS: what the merged config lacks, one item per line; empty when all is right.
# (Dumped again only when config.toml or the drop-in changed since the last check.)
check_merged() {
  local sum
  sum=$(configs_checksum)
  [[ "$sum" != "$CHECKED" ]] || return 0
  CHECKED=$sum
  read_merged
  PROBLEMS=$(merged_problems)
}

merged_problems() {
  merged_lacks "${CRI_REGISTRY_RE}\.registry\.config_path=$CERTS_PATH" "config_path = \"$CERTS_PATH\""
  merged_lacks "${CRI_RUNTIME_RE}\.containerd\.runtimes\.runc\.options\.SystemdCgroup=true" "SystemdCgroup = true for runc"
  if [[ "$NVIDIA_RUNTIME" == true ]]; then
    merged_lacks "${CRI_RUNTIME_RE}\.containerd\.default_runtime_name=nvidia" 'default_runtime_name = "nvidia"'
    merged_lacks "${CRI_RUNTIME_RE}\.containerd\.runtimes\.nvidia\.options\.BinaryName=.*/nvidia-container-runtime" \
      "the nvidia runtime (BinaryName .../nvidia-container-runtime)"
    merged_lacks "${CRI_RUNTIME_RE}\.containerd\.runtimes\.nvidia\.options\.SystemdCgroup=true" "SystemdCgroup = true for nvidia"
  fi
}

write_mirrors() { # one hosts.toml per registry; stale ones we wrote are removed
  local entry registry url server toml text wanted=" " dir
  local -a entries=()
  IFS=';' read -r -a entries <<<"$REGISTRY_MIRRORS"
  for entry in "${entries[@]}"; do
    [[ -n "$entry" ]] || continue
    registry="${entry%%=*}" url="${entry#*=}"
    [[ "$entry" == *=* && "$registry" =~ ^([a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?|_default)$ && "$url" =~ ^https?://[^[:space:]\"\\]+$ ]] ||
      die "bad REGISTRY_MIRRORS entry '$entry': expected registry=https://mirror"
    server="server = \"https://$registry\""
    [[ "$registry" == docker.io ]] && server='server = "https://registry-1.docker.io"'
    # _default: containerd's host namespace for every registry without its own hosts.toml;
    # no server line, so each pull falls back to the image's own registry.
    [[ "$registry" == _default ]] && server="# every registry without its own hosts.toml"
    wanted+="$registry " toml="$CERTS_DIR/$registry/hosts.toml"
    text=$(printf '%s\n%s\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]' "$MANAGED" "$server" "$url")
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
    "deb [signed-by=$NVIDIA_KEYRING] $TOOLKIT_REPO/stable/deb/amd64 /" "$NVIDIA_KEY_FPR" "NVIDIA Container Toolkit"
  apt_update
  apt_install --allow-downgrades "nvidia-container-toolkit=$v" "nvidia-container-toolkit-base=$v" \
    "libnvidia-container-tools=$v" "libnvidia-container1=$v"
}

configure_nvidia_default() { # nvidia-ctk without --set-as-default leaves runc the default
  local help
  local -a drop_in=()
  if grep -qs nvidia-container-runtime "$CONFIG" "$DROP_IN"; then # else surely not set up yet
    check_merged
    if [[ -z "$PROBLEMS" ]]; then
      log "nvidia is already containerd's default runtime, skipping"
      return 0
    fi
  fi
  help=$(nvidia-ctk runtime configure --help 2>&1) || true
  if [[ "$help" == *--drop-in-config* ]]; then
    drop_in=(--drop-in-config "$DROP_IN") # toolkit >= 1.18
  fi
  nvidia-ctk runtime configure --runtime=containerd --set-as-default --config="$CONFIG" "${drop_in[@]}" >&2 ||
    die "nvidia-ctk runtime configure --runtime=containerd failed: see its output above"
  patch_config "$CONFIG" # the nvidia options, should they lack what runc's had
  if [[ -f "$DROP_IN" ]]; then # it copies the whole CRI section: a stale copy would win
    patch_config "$DROP_IN"
  fi
}

toolkit_setting() { # key: its value in the toolkit config (the last uncommented line), or nothing
  sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([a-z]*\).*/\1/p" "$TOOLKIT_CONFIG" 2>/dev/null | tail -n 1
}

# GPU isolation: a pod sees only the GPUs the device plugin gave it. With NVIDIA's defaults an
# unprivileged container that sets NVIDIA_VISIBLE_DEVICES=all gets every GPU without asking
# the scheduler; these two settings make the runtime take the plugin's volume-mount list only.
# Read per container start: no restart needed.
set_toolkit_isolation() {
  local envvar=true mounts=false
  if [[ "$GPU_ISOLATION" == true ]]; then envvar=false mounts=true; fi
  if [[ "$(toolkit_setting "$ENVVAR_KEY")" == "$envvar" && "$(toolkit_setting "$MOUNTS_KEY")" == "$mounts" ]]; then
    log "toolkit: $ENVVAR_KEY=$envvar, $MOUNTS_KEY=$mounts already, skipping"
    return 0
  fi
  mkdir -p "$(dirname "$TOOLKIT_CONFIG")"
  # nvidia-ctk config prints nothing and exits 0 (1.17.8, 1.18.0): the file is checked after.
  nvidia-ctk config --config-file "$TOOLKIT_CONFIG" --set "$ENVVAR_KEY=$envvar" --set "$MOUNTS_KEY=$mounts" --in-place >&2 ||
    die "nvidia-ctk config --set $ENVVAR_KEY=$envvar failed: see its output above"
  [[ "$(toolkit_setting "$ENVVAR_KEY")" == "$envvar" && "$(toolkit_setting "$MOUNTS_KEY")" == "$mounts" ]] ||
    die "${TOOLKIT_CONFIG#"$ROOT"} does not say $ENVVAR_KEY = $envvar and $MOUNTS_KEY = $mounts after nvidia-ctk config"
  log "toolkit: $ENVVAR_KEY=$envvar, $MOUNTS_KEY=$mounts (GPU isolation $GPU_ISOLATION)"
}

# The merged config is checked with containerd itself; anything missing fails the step.
verify_config() {
  check_merged
  [[ -z "$PROBLEMS" ]] ||
    die "the config containerd runs with ('containerd config dump') lacks: $(paste -sd ';' <<<"$PROBLEMS" | sed 's/;/; /g'); pods would run without the GPU or with the wrong cgroup driver: fix ${CONFIG#"$ROOT"} (and ${DROP_IN#"$ROOT"}) by hand or upgrade the toolkit"
}

configs_checksum() { sha256sum "$CONFIG" "$DROP_IN" 2>/dev/null || true; } # a missing file: no line

restart_if_changed() { # service file checksum_before [checksum_now]
  if [[ "${4-$(checksum "$2")}" != "$3" ]]; then
    log "${2#"$ROOT"} changed, restarting $1"
    systemctl restart "$1" >&2 || die "systemctl restart $1 failed: see 'journalctl -u $1' on the node"
  elif ! systemctl is-active --quiet "$1"; then
    systemctl enable --now "$1" >&2 || die "systemctl enable --now $1 failed: see 'journalctl -u $1' on the node"
  else
    log "${2#"$ROOT"} unchanged, not restarting $1"
  fi
}

# --- `docker pull` uses Docker Hub's mirror too: daemon.json "registry-mirrors" (Docker
# applies it to Docker Hub only) from the docker.io entry of REGISTRY_MIRRORS. Without a
# docker.io entry the key is left as it is. ---
docker_hub_mirror() {
  local entry
  local -a entries=()
  IFS=';' read -r -a entries <<<"$REGISTRY_MIRRORS"
  for entry in "${entries[@]}"; do
    [[ "${entry%%=*}" == docker.io ]] && printf '%s' "${entry#*=}"
  done
  return 0
}

set_docker_mirror() {
  local url
  url=$(docker_hub_mirror)
  [[ -n "$url" ]] || return 0
  mkdir -p "$(dirname "$DOCKER_CONFIG")"
  python3 - "$DOCKER_CONFIG" "$url" <<'PY' || die "could not set registry-mirrors in ${DOCKER_CONFIG#"$ROOT"}: is it valid JSON?"
import json, os, sys
path, url = sys.argv[1], sys.argv[2]
cfg = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {}
if cfg.get("registry-mirrors") != [url]:
    cfg["registry-mirrors"] = [url]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=4)
        f.write("\n")
PY
}

configure_docker() {
  local before
  before=$(checksum "$DOCKER_CONFIG")
  if [[ "$NVIDIA_RUNTIME" != true ]]; then
    log "no GPU on this node: docker keeps runc"
  elif grep -q '"nvidia"' "$DOCKER_CONFIG" 2>/dev/null; then
    log "docker already has the nvidia runtime, skipping"
  else
    nvidia-ctk runtime configure --runtime=docker --config="$DOCKER_CONFIG" >&2 ||
      die "nvidia-ctk runtime configure --runtime=docker failed: see its output above"
  fi
  set_docker_mirror
  restart_if_changed docker "$DOCKER_CONFIG" "$before"
}

main() {
  track_time
  [[ "$TOOLKIT_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "CONTAINER_TOOLKIT_VERSION must look like 1.17.8 (got '$TOOLKIT_VERSION')"
  [[ "$PACKAGE_MIRROR" == aliyun || "$PACKAGE_MIRROR" == upstream ]] || die "PACKAGE_MIRROR must be aliyun or upstream (got '$PACKAGE_MIRROR')"
  [[ "$INSTALL_DOCKER" == true || "$INSTALL_DOCKER" == false ]] || die "INSTALL_DOCKER must be true or false (got '$INSTALL_DOCKER')"
  [[ "$NVIDIA_RUNTIME" == true || "$NVIDIA_RUNTIME" == false ]] || die "NVIDIA_RUNTIME must be true or false (got '$NVIDIA_RUNTIME')"
  [[ "$GPU_ISOLATION" == true || "$GPU_ISOLATION" == false ]] || die "GPU_ISOLATION must be true or false (got '$GPU_ISOLATION')"
  TMP=$(mktemp -d)
  trap 'rm -rf "$TMP"; report_time' EXIT # keeps track_time's report
  if [[ "$INSTALL_DOCKER" == true ]]; then
    install_docker
  fi
  install_containerd
  local before
  before=$(configs_checksum)
  ensure_config
  ensure_runc_options
  ensure_registry_config_path
  patch_config "$CONFIG" # before nvidia-ctk: it copies runc's options into its runtime
  if [[ "$NVIDIA_RUNTIME" == true ]]; then
    install_toolkit
    set_toolkit_isolation
    configure_nvidia_default
  else
    log "no GPU on this node: runc stays containerd's default runtime, no NVIDIA toolkit"
  fi
  verify_config
  write_mirrors
  restart_if_changed containerd "$CONFIG" "$before" "$(configs_checksum)"
  if [[ "$INSTALL_DOCKER" == true ]]; then
    configure_docker
  fi
}

main "$@"
