"""Known releases per component, so a version that was never released is refused at plan time (pure).

A version that looks valid but was never released (``1.34.99``, ``v9.9.9``) passes every
format check and fails only on the node, after the instances are paid for. This table
lists what upstream had released on the date below; each entry names its source.

Rule (same for every component, documented in README "Bad input"):

- a version in the table is accepted;
- a version newer than the table, close enough to be a release made after ``UPDATED``
  (at most ``step_slack`` past the newest known release of its series, or a new series at
  most ``series_slack`` past the newest series), is accepted with a warning;
- anything else is refused, and the message names the known releases. A version past
  the end of a closed series (``final``, or older than the ``maintained`` newest series,
  e.g. flannel ``v0.23.1`` after ``v0.24.0`` shipped) cannot be a later release, nor can
  a gap inside a series; both are refused. Where the table is not complete (drivers: only
  releases with a public tag are listed), a gap is a warning, not a refusal.

To update: add the new tags (``git tag`` in the repositories named below) and move
``UPDATED``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UPDATED = "2026-11-29"


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.lstrip("v").split("."))


def _expand(spec: str) -> tuple[str, ...]:
    """'v0.26.0-7' -> v0.26.0 .. v0.26.7 (every patch of a series up to the last)."""
    out: list[str] = []
    for item in spec.split():
        m = re.match(r"^(v?\d+\.\d+\.)(\d+)-(\d+)$", item)
        if m:
            out += [f"{m.group(1)}{n}" for n in range(int(m.group(2)), int(m.group(3)) + 1)]
        else:
            out.append(item)
    return tuple(out)


@dataclass(frozen=True)
class Component:
    key: str  # the gpu-k8s config key
    name: str
    versions: tuple[str, ...]
    source: str
    series_len: int  # leading numbers that form a series: 2 for 1.34.x, 1 for driver branch 535
    step_slack: int  # how far past the newest release of a series a version may be (warned)
    series_slack: int  # how far past the newest series a new series may be (warned)
    complete: bool = True  # every release of a known series is listed (gaps are refused)
    final: frozenset[tuple[int, ...]] = field(default_factory=frozenset)  # closed series
    maintained: int = 0  # only the newest N series still get releases (0: any series may)

    def known(self) -> set[tuple[int, ...]]:
        return {_parse(v) for v in self.versions}

    def newest(self, n: int = 3) -> list[str]:
        return sorted(self.versions, key=_parse)[-n:]


# Kubernetes: every patch of 1.28 .. 1.35 up to the newest one seen. Sources:
# kubernetes/kubernetes CHANGELOG/CHANGELOG-1.NN.md (stored snapshots list up to 1.35.4,
# 1.34.7, 1.33.5, 1.32.8; those of 1.28-1.31 end early) and, for the last patches of the
# minors that reached end of life, https://kubernetes.io/releases/patch-releases/
# (1.28.15, 1.29.15, 1.30.14: not re-read for this table, from its end-of-life list).
# 1.31-1.35 may have later patches than listed here: those are warned, not refused.
# 1.31.12: the CVE-2025-5187 fix shipped in 1.31.12, 1.32.8 and 1.33.4 (CHANGELOG-1.32).
KUBERNETES = Component(
    key="kubernetesVersion",
    name="Kubernetes",
    versions=_expand("1.28.0-15 1.29.0-15 1.30.0-14 1.31.0-12 1.32.0-8 1.33.0-5 1.34.0-7 1.35.0-4"),
    source="kubernetes/kubernetes CHANGELOG-1.28..1.35 and kubernetes.io/releases/patch-releases",
    series_len=2,
    step_slack=12,  # about a year of monthly patches
    series_slack=0,  # a newer minor is refused by kubernetesVersion's own range check
    final=frozenset({(1, 28), (1, 29), (1, 30)}),
)

# flannel: git tags of flannel-io/flannel (snapshot of 2026-08-14), v0.20.0 onwards.
FLANNEL = Component(
    key="flannelVersion",
    name="flannel",
    versions=_expand("v0.20.0-2 v0.21.0-5 v0.22.0-3 v0.23.0 v0.24.0-4 v0.25.0-7 v0.26.0-7 v0.27.0-4 v0.28.0-9"),
    source="git tags of github.com/flannel-io/flannel (2026-08-14)",
    series_len=2,
    step_slack=6,
    series_slack=2,
    maintained=1,
)

# NVIDIA device plugin: git tags of NVIDIA/k8s-device-plugin (snapshot of 2026-08-19),
# v0.12.0 onwards (older ones are refused by the config-file rule anyway).
DEVICE_PLUGIN = Component(
    key="devicePluginVersion",
    name="NVIDIA k8s-device-plugin",
    versions=_expand("v0.12.0-3 v0.13.0 v0.14.0-5 v0.15.0-1 v0.16.0-2 v0.17.0-4 v0.18.0-2 v0.19.0-3 v0.20.0"),
    source="git tags of github.com/NVIDIA/k8s-device-plugin (2026-08-19)",
    series_len=2,
    step_slack=6,
    series_slack=2,
    maintained=1,
)

# NVIDIA Container Toolkit: git tags of NVIDIA/nvidia-container-toolkit (2026-08-21).
CONTAINER_TOOLKIT = Component(
    key="containerToolkitVersion",
    name="NVIDIA Container Toolkit",
    versions=_expand("1.10.0 1.11.0 1.12.0-1 1.13.0-5 1.14.0-6 1.15.0 1.16.0-2 1.17.0-9 1.18.0-2 1.19.0-1 1.20.0"),
    source="git tags of github.com/NVIDIA/nvidia-container-toolkit (2026-08-21)",
    series_len=2,
    step_slack=6,
    series_slack=2,
    maintained=1,
)

# CUDA toolkit (MAJOR.MINOR): NVIDIA's CUDA toolkit release notes, Table 3 (reference
# nvidia-gpu-on-kubernetes.md section 4) and components/facts/cuda.py's branch table.
CUDA_TOOLKIT = Component(
    key="cudaToolkitVersion",
    name="CUDA toolkit",
    versions=tuple(f"11.{m}" for m in range(9)) + tuple(f"12.{m}" for m in range(10)) + ("13.0",),
    source="docs.nvidia.com/cuda/cuda-toolkit-release-notes Table 3",
    series_len=1,
    step_slack=3,
    series_slack=0,
)

# Tesla/datacenter drivers: git tags of NVIDIA/open-gpu-kernel-modules (one per driver
# release since branch 515; snapshot of 2026-03-05), plus branch 470 from Table 3 of the
# CUDA release notes (470.42.01) and Aliyun's GRID 470.256.03 (reference aliyun-gpu-ecs.md).
# Datacenter-only builds without an open-modules tag exist, so the table is not complete.
_DRIVER_TAGS = """
470.42.01 470.256.03
515.43.04 515.48.07 515.57 515.65.01 515.76 515.86.01 515.105.01 520.56.06 520.61.05
525.60.11 525.60.13 525.78.01 525.85.05 525.85.12 525.89.02 525.105.17 525.116.03 525.116.04 525.125.06 525.147.05
530.30.02 530.41.03
535.54.03 535.86.05 535.86.10 535.98 535.104.05 535.104.12 535.113.01 535.129.03 535.146.02 535.154.05
535.161.07 535.161.08 535.171.04 535.179 535.183.01 535.183.06 535.216.01 535.216.03 535.230.02 535.247.01
535.261.03 535.274.02 535.288.01
545.23.06 545.23.08 545.29.02 545.29.03 545.29.06
550.40.07 550.54.14 550.54.15 550.67 550.76 550.78 550.90.07 550.90.12 550.100 550.107.02 550.120
550.127.05 550.127.08 550.135 550.142 550.144.03 550.163.01
555.42.02 555.42.06 555.52.04 555.58 555.58.02 560.28.03 560.31.02 560.35.03 565.57.01 565.77
570.86.15 570.86.16 570.124.04 570.124.06 570.133.07 570.133.20 570.144 570.148.08 570.153.02 570.158.01
570.169 570.172.08 570.181 570.190 570.195.03 570.207 570.211.01
575.51.02 575.51.03 575.57.08 575.64 575.64.03 575.64.05
580.65.06 580.76.05 580.82.07 580.82.09 580.95.05 580.105.08 580.119.02 580.126.09 580.126.16 580.126.18
580.126.20 580.142
590.44.01 590.48.01 595.44.02 595.44.03 595.45.04
"""
DRIVER = Component(
    key="driverVersion",
    name="NVIDIA driver",
    versions=tuple(_DRIVER_TAGS.split()),
    source="git tags of github.com/NVIDIA/open-gpu-kernel-modules (2026-03-05) and CUDA release notes Table 3",
    series_len=1,
    step_slack=120,  # release numbers within a branch climb by ~10-50 per release
    series_slack=30,  # new branches come every ~5-10
    complete=False,
)

# Prometheus: git tags of prometheus/prometheus (snapshot of 2026-08-21), v3 onwards (v2 is
# refused by prometheusVersion's own check). A minor comes about every six weeks (RELEASE.md),
# so up to four newer minors are warned; 3.5 is the LTS line and still gets patches.
PROMETHEUS = Component(
    key="prometheusVersion",
    name="Prometheus",
    versions=_expand(
        "v3.0.0-1 v3.1.0 v3.2.0-1 v3.3.0-1 v3.4.0-2 v3.5.0-5 v3.6.0 v3.7.0-3 v3.8.0-1 v3.9.0-1 v3.10.0 v3.11.0-3 "
        "v3.12.0 v3.13.0-2 v3.14.0"
    ),
    source="git tags of github.com/prometheus/prometheus (2026-08-21)",
    series_len=2,
    step_slack=6,
    series_slack=4,
)

COMPONENTS = (KUBERNETES, FLANNEL, DEVICE_PLUGIN, CONTAINER_TOOLKIT, CUDA_TOOLKIT, DRIVER, PROMETHEUS)


@dataclass(frozen=True)
class Verdict:
    status: str  # "known" | "newer" (warn) | "unknown" (refuse)
    message: str


def check(component: Component, version: str) -> Verdict:
    """Whether ``version`` (already format-checked) is a known, plausible-newer or impossible release."""
    try:
        v = _parse(version)
    except ValueError:
        return Verdict("unknown", f"{version!r} is not a version number")
    known = component.known()
    newest = ", ".join(component.newest())
    where = f"the known-releases table (components/facts/releases.py, updated {UPDATED}; {component.source})"
    if v in known:
        return Verdict("known", "")
    n = component.series_len
    series = v[:n]
    in_series = sorted(k for k in known if k[:n] == series)
    all_series = sorted({k[:n] for k in known})
    warn = Verdict(
        "newer",
        f"{component.key} {version} is not in {where}; make sure {component.name} {version} exists.",
    )
    if in_series:
        newest = f"{'.'.join(map(str, series))}.x up to {'.'.join(map(str, in_series[-1]))}, newest {component.newest(1)[0]}"
    refuse = Verdict("unknown", f"{component.name} {version} was never released (known: {newest})")
    if in_series:
        top = in_series[-1]
        if v < top:
            return refuse if component.complete else warn
        closed = component.maintained and series not in all_series[-component.maintained :]
        if series in component.final or closed:
            return Verdict("unknown", f"{component.name} {'.'.join(map(str, series))} ended with {'.'.join(map(str, top))}")
        return warn if v[n] - top[n] <= component.step_slack else refuse
    if series > all_series[-1]:
        head_same = series[:-1] == all_series[-1][:-1]
        small_step = len(v) == n or v[n] <= component.step_slack
        if head_same and series[-1] - all_series[-1][-1] <= component.series_slack and small_step:
            return warn
        return refuse
    return refuse if component.complete else warn
