#!/usr/bin/env bash
# 25-prefetch-images.sh: pull the images this node will run while its driver builds.
#
# Runs on: every node, as root, right after 20-container-runtime (in parallel with
# 11-nvidia-driver and 30-kube-packages; nothing waits for it).
# Inputs (environment):
#   IMAGES                    space-separated, fully qualified image references (may be empty)
#   KUBEADM_IMAGE_REPOSITORY  control plane only: kubeadm's image repository (as 40-kubeadm-init
#                             uses it); empty: no kubeadm images
#   KUBERNETES_VERSION        e.g. 1.34.2 (with KUBEADM_IMAGE_REPOSITORY)
# Knobs: PULL_TRIES (tries per image, default 3), PULL_TIMEOUT (seconds per try, default 900),
#   STEP_DEADLINE (seconds for the whole step, default 1800), KUBEADM_WAIT (seconds to wait
#   for 30-kube-packages to install kubeadm, default 900), POLL_SECONDS (default 5),
#   GPU_K8S_ROOT (path prefix, tests only).
# stdin: not read.
# stdout: nothing.
#
# Images go through containerd's CRI namespace (k8s.io) with the registry mirrors that
# 20-container-runtime wrote as hosts.toml (ctr --hosts-dir /etc/containerd/certs.d: containerd
# cmd/ctr/commands/images/pull.go passes it to the transfer service, registry.WithHostDir, and
# to the --local resolver, commands/resolver.go; both unpack for the default snapshotter; kubeadm
# pulls through the CRI, which reads the same config_path), in the order they are needed:
# IMAGES in the order given, kubeadm's as soon as 30-kube-packages has installed kubeadm (checked
# before each image; if it is not there by the end, the step waits for it). An image already present is
# skipped. A failed pull is a WARNING and the step still exits 0: the kubelet pulls again
# when the pod starts. No lock is taken (no apt), so the driver step never waits for this one.
set -euo pipefail

readonly STEP="25-prefetch-images"
readonly ROOT="${GPU_K8S_ROOT:-}"
readonly IMAGES="${IMAGES:-}"
readonly KUBEADM_IMAGE_REPOSITORY="${KUBEADM_IMAGE_REPOSITORY:-}"
readonly KUBERNETES_VERSION="${KUBERNETES_VERSION:-}"
readonly PULL_TRIES="${PULL_TRIES:-3}"
readonly PULL_TIMEOUT="${PULL_TIMEOUT:-900}"
readonly STEP_DEADLINE="${STEP_DEADLINE:-1800}"
readonly KUBEADM_WAIT="${KUBEADM_WAIT:-900}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly HOSTS_DIR="$ROOT/etc/containerd/certs.d"
readonly CRI_SOCKET="unix:///run/containerd/containerd.sock"
FAILED=0
KUBEADM_DONE=false

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

out_of_time() { ((SECONDS >= STEP_DEADLINE)); }

present() { # image
  ctr -n k8s.io images ls -q 2>/dev/null | grep -Fxq "$1"
}

pull_image() { # image
  local image="$1" try
  if present "$image"; then
    log "$image already present, skipping"
    return 0
  fi
  for ((try = 1; try <= PULL_TRIES; try++)); do
    if out_of_time; then
      warn "step time limit (${STEP_DEADLINE}s) reached before $image: the kubelet pulls it later"
      FAILED=$((FAILED + 1))
      return 0
    fi
    if timeout "$PULL_TIMEOUT" ctr -n k8s.io images pull --hosts-dir "$HOSTS_DIR" "$image" >/dev/null; then
      log "pulled $image"
      return 0
    fi
    warn "pulling $image failed (try $try of $PULL_TRIES)"
    ((try == PULL_TRIES)) || sleep $((POLL_SECONDS * try))
  done
  warn "could not pull $image: the kubelet pulls it later (check gpu-k8s:registryMirrors if it fails there too)"
  FAILED=$((FAILED + 1))
}

wait_for_kubeadm() { # 30-kube-packages installs it in parallel
  local waited=0
  until command -v kubeadm >/dev/null 2>&1; do
    if ((waited >= KUBEADM_WAIT)) || out_of_time; then
      return 1
    fi
    sleep "$POLL_SECONDS"
    waited=$((waited + POLL_SECONDS))
    ((POLL_SECONDS > 0)) || waited=$((waited + 1))
  done
}

pull_kubeadm_images() {
  KUBEADM_DONE=true
  [[ -n "$KUBEADM_IMAGE_REPOSITORY" ]] || return 0
  if ! wait_for_kubeadm; then
    warn "kubeadm not installed after ${KUBEADM_WAIT}s: kubeadm init pulls its images itself"
    FAILED=$((FAILED + 1))
    return 0
  fi
  local try
  for ((try = 1; try <= PULL_TRIES; try++)); do
    if timeout "$PULL_TIMEOUT" kubeadm config images pull --image-repository "$KUBEADM_IMAGE_REPOSITORY" \
      --kubernetes-version "v$KUBERNETES_VERSION" --cri-socket "$CRI_SOCKET" >&2; then
      log "pulled kubeadm's images for v$KUBERNETES_VERSION from $KUBEADM_IMAGE_REPOSITORY"
      return 0
    fi
    warn "kubeadm config images pull failed (try $try of $PULL_TRIES)"
    ((try == PULL_TRIES)) || sleep $((POLL_SECONDS * try))
  done
  warn "could not pull kubeadm's images: kubeadm init pulls them itself"
  FAILED=$((FAILED + 1))
}

main() {
  track_time
  if [[ -n "$KUBEADM_IMAGE_REPOSITORY" && -z "$KUBERNETES_VERSION" ]]; then
    die "KUBERNETES_VERSION is required with KUBEADM_IMAGE_REPOSITORY"
  fi
  local image
  for image in $IMAGES; do
    # kubeadm init needs its images first: pull them as soon as 30 has installed kubeadm
    if [[ -n "$KUBEADM_IMAGE_REPOSITORY" && "$KUBEADM_DONE" == false ]] && command -v kubeadm >/dev/null 2>&1; then
      pull_kubeadm_images
    fi
    pull_image "$image"
  done
  if [[ "$KUBEADM_DONE" == false ]]; then
    pull_kubeadm_images
  fi
  if ((FAILED > 0)); then
    warn "$FAILED pull(s) did not finish: not a failure, the kubelet pulls what is missing"
  else
    log "every image is on the node"
  fi
}

main "$@"
