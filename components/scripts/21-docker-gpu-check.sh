#!/usr/bin/env bash
# 21-docker-gpu-check.sh: the seed's Docker test, `docker run --gpus all <image> nvidia-smi -L`.
#
# Runs on: GPU nodes where Docker was requested (installDocker), as root, after
# 11-nvidia-driver and 20-container-runtime.
# Inputs (environment):
#   DOCKER_TEST_IMAGE  any small image, e.g. ubuntu:22.04 (nvidia-smi is injected by the
#                      NVIDIA runtime, so the image need not contain it)
#   GPU_ISOLATION      true | false (default false): with it the toolkit ignores the
#                      NVIDIA_VISIBLE_DEVICES that `docker run --gpus` sets, unless the container
#                      holds CAP_SYS_ADMIN (nvidia-container-toolkit internal/config/image/
#                      privileged.go), so the check adds that capability
# Knobs: PULL_TRIES (default 3), POLL_SECONDS (pause between pulls, default 5).
# stdin: not read.
# stdout: the `nvidia-smi -L` lines, e.g. "GPU 0: Tesla P4 (UUID: GPU-...)".
set -euo pipefail

readonly STEP="21-docker-gpu-check"
readonly IMAGE="${DOCKER_TEST_IMAGE:-}"
readonly PULL_TRIES="${PULL_TRIES:-3}"
readonly POLL_SECONDS="${POLL_SECONDS:-5}"
readonly GPU_ISOLATION="${GPU_ISOLATION:-false}"

# shellcheck source=lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh" # gpu-k8s:inline

# --- pull first (with retries) so a registry hiccup is not mistaken for a GPU problem ---
pull_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present, skipping the pull"
    return 0
  fi
  local try
  for ((try = 1; try <= PULL_TRIES; try++)); do
    docker pull "$IMAGE" >&2 && return 0
    warn "docker pull $IMAGE failed (try $try of $PULL_TRIES)"
    if ((try < PULL_TRIES)); then
      sleep "$POLL_SECONDS"
    fi
  done
  die "cannot pull $IMAGE: Docker Hub may be unreachable from this region; add a registry-mirrors entry to /etc/docker/daemon.json on the node, or set gpu-k8s:installDocker false (Kubernetes does not need Docker)"
}

run_check() {
  local out rc=0
  local -a caps=()
  if [[ "$GPU_ISOLATION" == true ]]; then caps=(--cap-add SYS_ADMIN); fi
  out=$(docker run --rm --gpus all "${caps[@]}" "$IMAGE" nvidia-smi -L 2>&1) || rc=$?
  if ((rc == 0)) && grep -Eq '^GPU [0-9]+:' <<<"$out"; then
    grep -E '^GPU [0-9]+:' <<<"$out"
    return 0
  fi
  printf '%s\n' "$out" | tail -n 20 >&2
  case "$out" in
    *"could not select device driver"*)
      die "Docker does not know the NVIDIA runtime (could not select device driver): run 'nvidia-ctk runtime configure --runtime=docker && systemctl restart docker' (20-container-runtime does this when installDocker is true)" ;;
    *"unsatisfied condition: cuda>="*)
      die "$IMAGE needs a newer CUDA than this node's driver supports: use an image built for an older CUDA" ;;
    *) die "docker run --rm --gpus all $IMAGE nvidia-smi -L failed (exit $rc): see the output above; 12-gpu-verify shows whether the driver itself works" ;;
  esac
}

main() {
  track_time
  [[ -n "$IMAGE" && "$IMAGE" != -* ]] || die "DOCKER_TEST_IMAGE must name an image, e.g. ubuntu:22.04 (got '$IMAGE')"
  command -v docker >/dev/null 2>&1 ||
    die "docker not found: this check needs gpu-k8s:installDocker true (20-container-runtime installs Docker)"
  pull_image
  run_check
}

main "$@"
