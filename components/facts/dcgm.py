"""What dcgm-exporter and Prometheus are, and which exporter a GPU family gets (pure, dated, sourced).

Read by the config checks (components/config/: a release or counters file the program does
not know is refused before anything is created) and by the monitoring component
(components/gpu/monitoring.py), which deploys them.
"""

from __future__ import annotations

import re
from pathlib import Path

from components.facts import catalog

MODES = ("dcgm", "servicemonitor", "none")

# --- dcgm-exporter -------------------------------------------------------------------
EXPORTER_REPO = "nvcr.io/nvidia/k8s/dcgm-exporter"
# Releases this program knows: <DCGM>-<exporter> tag -> the image variant NVIDIA's chart
# uses at that tag (deployment/values.yaml image.tag). Source: the git tags of
# NVIDIA/dcgm-exporter (snapshot of 2026-11-29) and, for 4.6.0-4.8.3, NVIDIA's README at
# that release (docker run ... dcgm-exporter:4.6.0-4.8.3-distroless), which NVIDIA GPU
# Operator v26.7.0 pins (shared/reference/nvidia-gpu-on-kubernetes.md section 1.1).
# Checked 2026-11-29. 4.x only: 3.x images take other flags and counter names.
KNOWN_EXPORTER_RELEASES: dict[str, str] = {
    "4.6.0-4.8.3": "distroless",
    "4.5.3-4.8.2": "distroless",
    "4.5.2-4.8.1": "distroless",
    "4.5.1-4.8.0": "distroless",
    "4.4.2-4.7.1": "ubuntu22.04",
    "4.4.2-4.7.0": "ubuntu22.04",
    "4.4.1-4.6.0": "ubuntu22.04",
    "4.4.1-4.5.2": "ubuntu22.04",
    "4.4.0-4.5.0": "ubuntu22.04",
    "4.3.1-4.4.0": "ubuntu22.04",
    "4.2.3-4.2.0": "ubuntu22.04",
    "4.2.3-4.1.3": "ubuntu22.04",
    "4.2.3-4.1.1": "ubuntu22.04",
    "4.2.0-4.1.0": "ubuntu22.04",
    "4.1.1-4.0.4": "ubuntu22.04",
}
COUNTERS_FILE = "default-counters.csv"
# The image's own etc/default-counters.csv at 4.5.3-4.8.2 (NVIDIA/dcgm-exporter), beside this module.
DEFAULT_COUNTERS = (Path(__file__).resolve().parent / "dcgm" / COUNTERS_FILE).read_text()
# The fields `make gpu-top` reads (tools/gpu_top.py).
GPU_TOP_FIELDS = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
)
_COUNTER_ROW = re.compile(r"^(DCGM_(?:FI|EXP)_[A-Z0-9_]+)\s*,\s*(gauge|counter|label)\s*,\s*\S.*$")
_PASCAL_RE = re.compile(r"^Tesla P\d")  # P4, P40, P100: compute capability 6.x

# Per node family: which exporter runs there.
FULL, NO_PROFILING, SKIP = "full", "no-profiling", "skip"
VARIANT_NOTES = {
    FULL: "exporter, all counters",
    NO_PROFILING: "exporter without DCGM_FI_PROF_* (Pascal)",
    SKIP: "none (vGPU guest: DCGM unsupported)",
}

# --- Prometheus --------------------------------------------------------------------------
PROMETHEUS_REPO = "docker.io/prom/prometheus"
_PROMETHEUS_TAG_RE = re.compile(r"^v(\d+)\.\d+\.\d+$")
MIN_PROMETHEUS_MAJOR = 3


def exporter_version_ok(release: str) -> bool:
    return release in KNOWN_EXPORTER_RELEASES


def prometheus_version_ok(tag: str) -> bool:
    m = _PROMETHEUS_TAG_RE.match(tag)
    return bool(m) and int(m.group(1)) >= MIN_PROMETHEUS_MAJOR


def exporter_image(release: str) -> str:
    return f"{EXPORTER_REPO}:{release}-{KNOWN_EXPORTER_RELEASES[release]}"


def counters_error(text: str) -> str | None:
    """Why a counters CSV would not load (or lacks what gpu-top reads); None when fine."""
    fields = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _COUNTER_ROW.match(line)
        if not m:
            return f"line {number} {line[:60]!r} is not 'DCGM_FI_<FIELD>, gauge|counter|label, help'"
        fields.append(m.group(1))
    if not fields:
        return "it lists no counters"
    missing = [f for f in GPU_TOP_FIELDS if f not in fields]
    if missing:
        return f"it lacks {', '.join(missing)}, which make gpu-top reads"
    return None


def exporter_variant(profile: catalog.GpuProfile) -> str:
    """FULL, NO_PROFILING (Pascal) or SKIP (vGPU guest) for a node family."""
    if profile.kind == catalog.VGPU:
        return SKIP
    if profile.gpu_model and _PASCAL_RE.match(profile.gpu_model):
        return NO_PROFILING
    return FULL


def variant_counters(counters: str, variant: str) -> str:
    """The counters file for a variant: Pascal drops the DCGM_FI_PROF_* rows."""
    if variant != NO_PROFILING:
        return counters
    kept = [line for line in counters.splitlines() if not line.strip().startswith("DCGM_FI_PROF_")]
    return "\n".join(kept) + "\n"


def exporter_plan(pools: dict[str, catalog.GpuProfile]) -> dict[str, str]:
    """pool -> variant, for the plan and the gpuMetrics output."""
    return {pool: exporter_variant(profile) for pool, profile in pools.items()}
