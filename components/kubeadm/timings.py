"""The `timings` output: how long each node step took on a real run, and the critical path (pure).

Every node step calls ``track_time`` (scripts/lib/common.sh), which prints on stderr, as the
step's last line, ``[gpu-k8s <step>] TIMING seconds=<s> rx_bytes=<n|unknown>``: the step's
wall time and the bytes the node received meanwhile (/proc/net/dev, every interface but lo;
node-wide, so steps running at the same time on a node count each other's downloads).
Stdout is untouched, so no parsed stdout (kubeconfig, CA hash, nvidia-smi, 70, 80) changes.

``report`` turns the steps (in run order, with what each waits for) and their stderr into
one entry per node, and marks the critical path: the chain of steps, following the
dependencies, whose summed seconds are the largest (what GPU-ready waited for). Offline
(mocks: no stderr) every measured value is a labelled placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TIMING_RE = re.compile(
    r"^\[gpu-k8s (?P<step>[\w.-]+)\] TIMING seconds=(?P<seconds>[0-9]+(?:\.[0-9]+)?|unknown) "
    r"rx_bytes=(?P<rx>-?[0-9]+|unknown)$",
    re.M,
)
PLACEHOLDER_SECONDS = "<placeholder: seconds measured on the node at deploy time>"
PLACEHOLDER_BYTES = "<placeholder: bytes received, measured on the node at deploy time>"
PLACEHOLDER_CRITICAL = "<placeholder: known after a real run>"
MAY_REBOOT = "only if nouveau is loaded or bound to the GPU there (driver-prepare prints reboot, settle waits)"
NOTE = (
    "seconds: wall time of each step on the node; rxBytes: bytes the node received while the step ran "
    "(node-wide: steps that run at the same time overlap); critical: on the longest chain of steps"
)


def parse_timing(stderr: str | None) -> tuple[float | None, int | None] | None:
    """(seconds, rx bytes) from a step's stderr (its last TIMING line), or None when it has none."""
    found = list(TIMING_RE.finditer(stderr or ""))
    if not found:
        return None
    m = found[-1]
    seconds = None if m["seconds"] == "unknown" else float(m["seconds"])
    rx = None if m["rx"] == "unknown" or int(m["rx"]) < 0 else int(m["rx"])  # a counter reset: unknown
    return seconds, rx


@dataclass(frozen=True)
class TimedStep:
    name: str  # unique, e.g. gpu-0-bootstrap-nvidia-driver
    node: str
    role: str  # e.g. nvidia-driver
    after: tuple[str, ...] = ()  # names of the timed steps it waits for


def critical_path(steps: Sequence[TimedStep], seconds: Mapping[str, float]) -> list[str]:
    """The chain with the largest summed seconds (steps are given in a dependency order)."""
    best: dict[str, tuple[float, list[str]]] = {}
    for step in steps:
        before = max((best[a] for a in step.after if a in best), key=lambda b: b[0], default=(0.0, []))
        best[step.name] = (before[0] + seconds.get(step.name, 0.0), [*before[1], step.name])
    if not best:
        return []
    return max(best.values(), key=lambda b: b[0])[1]


def report(steps: Sequence[TimedStep], stderrs: Sequence[str | None], gpu_nodes: Sequence[str] = ()) -> dict:
    """The `timings` output: per node, its steps in run order; the critical path; what the fields mean."""
    parsed = {s.name: parse_timing(e) for s, e in zip(steps, stderrs, strict=True)}
    measured = all(p is not None and p[0] is not None for p in parsed.values())
    path: list[str] = []
    if measured and steps:
        path = critical_path(steps, {n: p[0] for n, p in parsed.items() if p and p[0] is not None})
    nodes: dict[str, dict] = {}
    for step in steps:
        node = nodes.setdefault(step.node, {"mayReboot": step.node in gpu_nodes, "steps": []})
        timing = parsed[step.name]
        seconds, rx = timing if timing else (None, None)
        node["steps"].append(
            {
                "step": step.role,
                "seconds": seconds if seconds is not None else PLACEHOLDER_SECONDS,
                "rxBytes": rx if rx is not None else (PLACEHOLDER_BYTES if timing is None else "unknown"),
                "critical": (step.name in path) if measured else PLACEHOLDER_CRITICAL,
            }
        )
    total = sum(parsed[n][0] for n in path) if path else None  # type: ignore[index,misc]
    # "mayReboot" first: the plan's one-line view of an output is cut at 200 characters.
    return {
        "mayReboot": f"{', '.join(n for n in nodes if n in gpu_nodes) or 'none'}: {MAY_REBOOT}",
        "nodes": nodes,
        "criticalPath": path if measured else PLACEHOLDER_CRITICAL,
        "criticalSeconds": round(total, 1) if total is not None else PLACEHOLDER_SECONDS,
        "note": NOTE,
    }
