"""`make gpu-top`: utilisation, memory, temperature and power per GPU per node, from DCGM.

    python -m tools.gpu_top [--watch N] [--prometheus NS/SERVICE:PORT] [--source exporter]

It reads through the Kubernetes API server with `kubectl get --raw` (the service proxy),
so no port is opened to the internet:

- ``--source prometheus`` (default): one instant query to the Prometheus that
  ``gpu-k8s:monitoring dcgm`` deploys (gpu-metrics/prometheus:web), or to the one given
  with ``--prometheus`` (e.g. a Prometheus Operator's, for ``monitoring: servicemonitor``).
- ``--source exporter``: each dcgm-exporter pod's /metrics, through the pod proxy.

GPU nodes the exporter skips (vGPU guests: DCGM does not support them) are listed below
the table, then the GPU alerts firing in that Prometheus (its /api/v1/alerts: the rules of
components/gpu/monitoring.py, which carry ``alert_source: gpu-k8s``; there is no
Alertmanager in ``monitoring: dcgm``). kubeconfig: $KUBECONFIG, else ./kubeconfig (`make
kubeconfig`), else kubectl's own.

Field names: dcgm-exporter up to 4.8 (default-counters.csv at 4.5.3-4.8.2) sends
DCGM_FI_DEV_GPU_UTIL in %, DCGM_FI_DEV_FB_USED/FREE/RESERVED in MiB, DCGM_FI_DEV_GPU_TEMP and
DCGM_FI_DEV_POWER_USAGE; 4.9.0 renamed them to DCGM 4.7's names (release notes: "utilization
from a percentage to a 0 to 1 ratio, GPU memory from MiB to bytes"): DCGM_FI_DEV_GPU_UTIL_RATIO,
DCGM_FI_DEV_GPU_TEMP_CELSIUS, DCGM_FI_DEV_BOARD_POWER_WATTS (DCGM's aliases of fields 203, 150
and 155). Both are read. The names of 4.9's byte-valued memory fields are not confirmed
(no 4.9 source was at hand; DCGM's own FB fields 251-253 are in MB), so memory is shown for
the 4.8 names only and the table says so for a GPU with 4.9 names.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from components.backend import GPU_NODE_LABEL
from components.facts.catalog import VGPU
from components.facts.dcgm import ALERT_LABELS, EXPORTER_PORT
from components.gpu.monitoring import EXPORTER_NAME, NAMESPACE, PROMETHEUS_NAME, PROMETHEUS_PORT_NAME

# What components/gpu/monitoring.py deploys: where to read it.
PROMETHEUS = f"{NAMESPACE}/{PROMETHEUS_NAME}:{PROMETHEUS_PORT_NAME}"
EXPORTER_SELECTOR = f"app.kubernetes.io/name={EXPORTER_NAME}"
VGPU_SELECTOR = f"{GPU_NODE_LABEL}={VGPU}"
UTIL, FB_USED, FB_FREE, FB_RESERVED = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
)
TEMP, POWER = "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"
# dcgm-exporter 4.9+ names (a 0-1 ratio, Celsius, watts).
UTIL_RATIO, TEMP_CELSIUS, POWER_WATTS = (
    "DCGM_FI_DEV_GPU_UTIL_RATIO",
    "DCGM_FI_DEV_GPU_TEMP_CELSIUS",
    "DCGM_FI_DEV_BOARD_POWER_WATTS",
)
LEGACY_FIELDS = (UTIL, FB_USED, FB_FREE, FB_RESERVED, TEMP, POWER)
NEW_FIELDS = (UTIL_RATIO, TEMP_CELSIUS, POWER_WATTS)
FIELDS = LEGACY_FIELDS + NEW_FIELDS
EXPECTED = (
    f"{UTIL}, {FB_USED}, {TEMP}, {POWER} (dcgm-exporter 4.x up to 4.8) or {UTIL_RATIO}, {TEMP_CELSIUS}, {POWER_WATTS} (4.9+)"
)
# The label every rule of components/gpu/monitoring.py carries.
(ALERT_SOURCE,) = ALERT_LABELS.items()
# DCGM's "blank" sentinels (dcgm_structs.h: DCGM_FP64_BLANK 140737488355328.0 = 2^47,
# DCGM_INT64_BLANK 0x7ffffffffffffff0 and the NOT_FOUND/NOT_SUPPORTED values just above it,
# e.g. 9223372036854775794 in NVIDIA's README example): a field the GPU does not report.
# No value gpu-top reads comes near 2^47, so anything from there up is shown as "-".
DCGM_BLANK_FROM = 140737488355328.0
# Where the node name is: our scrape config's label, then the exporter's own (renamed from
# Hostname to hostname after 4.8.2), then the scrape target.
NODE_LABELS = ("kubernetes_node", "Hostname", "hostname", "instance")


class GpuTopError(Exception):
    """An environment problem (no kubectl, no cluster, no Prometheus): one line, exit 2."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float | None  # None: DCGM blank / not a number


@dataclass
class GpuRow:
    node: str
    gpu: str
    model: str = ""
    values: dict[str, float | None] = field(default_factory=dict)

    @property
    def new_names(self) -> bool:
        """dcgm-exporter 4.9+ field names (and units) on this GPU."""
        return any(f in self.values for f in NEW_FIELDS)

    def _either(self, legacy: str, new: str, scale: float = 1) -> float | None:
        if self.values.get(legacy) is not None:
            return self.values[legacy]
        value = self.values.get(new)
        return None if value is None else value * scale

    @property
    def util(self) -> float | None:  # %
        return self._either(UTIL, UTIL_RATIO, 100)

    @property
    def temp(self) -> float | None:  # C
        return self._either(TEMP, TEMP_CELSIUS)

    @property
    def power(self) -> float | None:  # W
        return self._either(POWER, POWER_WATTS)

    @property
    def memory_used(self) -> float | None:  # MiB; 4.9+ memory fields are not read (see module doc)
        return None if self.new_names else self.values.get(FB_USED)

    @property
    def memory_total(self) -> float | None:
        used, free = self.memory_used, self.values.get(FB_FREE)
        if used is None or free is None:
            return None
        return used + free + (self.values.get(FB_RESERVED) or 0)


@dataclass(frozen=True)
class Alert:
    name: str
    labels: dict[str, str]
    state: str  # firing | pending
    active_at: str  # Prometheus' activeAt (RFC 3339), "" if absent
    summary: str


# --- parsing (pure) ----------------------------------------------------------------------


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if value >= DCGM_BLANK_FROM:
        return None
    return value


def parse_prometheus(payload: dict) -> list[Sample]:
    """Samples of a Prometheus /api/v1/query answer (resultType vector)."""
    if payload.get("status") != "success":
        raise GpuTopError(f"Prometheus answered {payload.get('errorType', 'error')}: {payload.get('error', payload)}")
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise GpuTopError(f"Prometheus answered a {data.get('resultType')!r}, expected a vector")
    samples = []
    for item in data.get("result") or []:
        labels = dict(item.get("metric") or {})
        name = labels.pop("__name__", "")
        samples.append(Sample(name, labels, _number(str((item.get("value") or [0, "NaN"])[1]))))
    return samples


_NAME_RE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_exposition(text: str, extra: dict[str, str] | None = None) -> list[Sample]:
    """Samples of Prometheus text exposition (what dcgm-exporter serves on /metrics)."""
    samples = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            name, _, rest = line.partition("{")
            body, _, tail = rest.rpartition("}")
            labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL_RE.findall(body)}
        else:
            name, _, tail = line.partition(" ")
            labels = {}
        if not _NAME_RE.match(name.strip()):
            continue  # e.g. the "..." elisions of NVIDIA's README example
        value = tail.split()[0] if tail.split() else "NaN"
        samples.append(Sample(name.strip(), {**(extra or {}), **labels}, _number(value)))
    return samples


def node_of(labels: dict[str, str]) -> str:
    for key in NODE_LABELS:
        if labels.get(key):
            return labels[key]
    return "?"


def gpu_rows(samples: list[Sample]) -> list[GpuRow]:
    """One row per (node, GPU), sorted; other metrics and MIG instances' duplicates ignored."""
    rows: dict[tuple[str, str], GpuRow] = {}
    for s in samples:
        if s.name not in FIELDS or "gpu" not in s.labels:
            continue
        node = node_of(s.labels)
        key = (node, s.labels["gpu"])
        row = rows.setdefault(key, GpuRow(node=node, gpu=s.labels["gpu"]))
        row.model = row.model or s.labels.get("modelName") or s.labels.get("model_name", "")
        row.values.setdefault(s.name, s.value)
    return sorted(rows.values(), key=lambda r: (r.node, int(r.gpu) if r.gpu.isdigit() else 0, r.gpu))


def _fmt(value: float | None, unit: str, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def _columns(lines: list[tuple[str, ...]], right: set[int]) -> list[str]:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]


def format_table(rows: list[GpuRow], skipped_nodes: list[str] | None = None, found: list[str] | None = None) -> str:
    """The table; below it the vGPU nodes without samples, and why a table is empty.
    ``found``: the DCGM metric names the source has (said when none is one gpu-top reads)."""
    header = ("NODE", "GPU", "MODEL", "UTIL", "MEMORY USED / TOTAL", "TEMP", "POWER")
    lines = [header]
    for r in rows:
        used, total = r.memory_used, r.memory_total
        memory = "-" if used is None else f"{used:.0f} / {_fmt(total, '')} MiB"
        lines.append((r.node, r.gpu, r.model or "-", _fmt(r.util, " %"), memory, _fmt(r.temp, " C"), _fmt(r.power, " W", 1)))
    text = _columns(lines, {3, 4, 5, 6})
    if not rows and found:
        shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
        text.append(f"(no GPU samples: the exporter sends {shown}, none of which gpu-top reads; it expects {EXPECTED})")
    elif not rows:
        text.append("(no GPU samples: the exporter pods may still be starting, or no GPU node runs one)")
    new = sorted({r.node for r in rows if r.new_names})
    if new:
        text.append(
            f"{', '.join(new)}: dcgm-exporter 4.9+ field names ({UTIL_RATIO} ...): memory not shown, "
            "its byte-valued memory fields' names are not confirmed"
        )
    with_rows = {r.node for r in rows}
    for node in skipped_nodes or []:
        if node not in with_rows:  # gpu-k8s:vgpuMetrics runs the exporter there
            text.append(f"{node}: vGPU guest, no exporter (DCGM does not support vGPU guests); use nvidia-smi on the node")
    return "\n".join(text) + "\n"


def parse_alerts(payload: dict) -> list[Alert]:
    """This program's alerts (label ALERT_SOURCE) of a Prometheus /api/v1/alerts answer."""
    if payload.get("status") != "success":
        raise GpuTopError(f"Prometheus answered {payload.get('errorType', 'error')}: {payload.get('error', payload)}")
    alerts = []
    for item in (payload.get("data") or {}).get("alerts") or []:
        labels = dict(item.get("labels") or {})
        if labels.get(ALERT_SOURCE[0]) != ALERT_SOURCE[1]:
            continue
        summary = (item.get("annotations") or {}).get("summary", "")
        alerts.append(Alert(labels.get("alertname", "?"), labels, item.get("state", ""), item.get("activeAt") or "", summary))
    return alerts


def _since(active_at: str) -> str:
    try:
        when = datetime.fromisoformat(active_at.replace("Z", "+00:00"))
    except ValueError:
        return active_at or "-"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_alerts(alerts: list[Alert]) -> str:
    firing = [a for a in alerts if a.state == "firing"]
    firing.sort(key=lambda a: (a.name, node_of(a.labels), a.labels.get("gpu", "")))
    pending = sorted({a.name for a in alerts if a.state == "pending"})
    later = f" ({len(pending)} pending: {', '.join(pending)})" if pending else ""
    if not firing:
        return f"no GPU alerts firing{later}\n"
    lines = [("ALERT", "NODE", "GPU", "ACTIVE SINCE", "SUMMARY")]
    for a in firing:
        node = node_of(a.labels) if any(a.labels.get(k) for k in NODE_LABELS) else "-"
        lines.append((a.name, node, a.labels.get("gpu", "-"), _since(a.active_at), a.summary))
    return f"GPU alerts firing: {len(firing)}{later}\n" + "\n".join(_columns(lines, set())) + "\n"


def query() -> str:
    return '{__name__=~"' + "|".join(FIELDS) + '"}'


DCGM_NAMES_QUERY = 'group by (__name__) ({__name__=~"DCGM_.+"})'


def _service_proxy(target: str) -> str:
    m = re.match(r"^([a-z0-9-]+)/([a-z0-9-]+):([a-z0-9-]+)$", target)
    if not m:
        raise GpuTopError(
            f"--prometheus {target!r}: expected NAMESPACE/SERVICE:PORT, e.g. {PROMETHEUS} or monitoring/prometheus-operated:9090"
        )
    ns, svc, port = m.groups()
    return f"/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy"


def prometheus_path(target: str, promql: str) -> str:
    """NS/SERVICE:PORT -> the API server's service-proxy path of an instant query."""
    return f"{_service_proxy(target)}/api/v1/query?query={quote(promql, safe='')}"


def alerts_path(target: str) -> str:
    """NS/SERVICE:PORT -> the service-proxy path of Prometheus' active alerts."""
    return f"{_service_proxy(target)}/api/v1/alerts"


# --- kubectl (I/O) -------------------------------------------------------------------------


def kubectl_env(env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """KUBECONFIG: as set, else ./kubeconfig (`make kubeconfig`), else kubectl's default."""
    env = dict(os.environ if env is None else env)
    local = (cwd or Path.cwd()) / "kubeconfig"
    given = [f for f in env.get("KUBECONFIG", "").split(os.pathsep) if f]
    if given and not any(Path(f).is_file() for f in given):  # kubectl would fall back to localhost:8080
        raise GpuTopError(f"KUBECONFIG={env['KUBECONFIG']}: no such file; run `make kubeconfig` or fix KUBECONFIG")
    if not env.get("KUBECONFIG"):
        if local.is_file() and local.stat().st_size == 0:  # e.g. a `make kubeconfig` of an older version that failed
            raise GpuTopError("./kubeconfig is empty: run `make kubeconfig` again (it needs a deployed stack) or set KUBECONFIG")
        if local.is_file():
            env["KUBECONFIG"] = str(local)
        elif not (Path(env.get("HOME", "~")).expanduser() / ".kube" / "config").is_file():
            raise GpuTopError("no kubeconfig: run `make kubeconfig` (writes ./kubeconfig) or set KUBECONFIG")
    return env


def explain_kubectl_error(path: str, stderr: str) -> str:
    text = " ".join(stderr.split())
    if "NotFound" in text or "not found" in text:
        if "/services/" in path:
            return (
                f"no Prometheus at {path.split('/proxy/')[0]}: is gpu-k8s:monitoring dcgm deployed with a supported "
                "GPU node? (servicemonitor: pass --prometheus NS/SERVICE:PORT, or --source exporter)"
            )
        return f"not found: {path} ({text})"
    if "503" in text or "ServiceUnavailable" in text or "no endpoints available" in text:
        return "Prometheus is not ready yet (no running pod behind its service); try again in a minute"
    if "connection refused" in text or "Unable to connect" in text or "i/o timeout" in text or "no such host" in text:
        return f"cannot reach the Kubernetes API server ({text}); is the stack up and your IP in gpu-k8s:allowedCidrs?"
    if "Forbidden" in text or "Unauthorized" in text:
        return f"the API server refused the request ({text}); check your kubeconfig"
    return f"kubectl get --raw {path} failed: {text or 'no output'}"


def kubectl_get_raw(path: str, env: dict[str, str], timeout: float = 20) -> str:
    kubectl = shutil.which("kubectl", path=env.get("PATH"))
    if not kubectl:
        raise GpuTopError("kubectl not found on PATH: install kubectl (same minor as the cluster) and run `make kubeconfig`")
    try:
        done = subprocess.run(
            [kubectl, "get", "--raw", path, f"--request-timeout={int(timeout)}s"],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout + 5,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GpuTopError(f"kubectl get --raw {path}: no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        raise GpuTopError(explain_kubectl_error(path, done.stderr))
    return done.stdout


def _json(text: str, what: str) -> dict:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise GpuTopError(f"{what} did not answer JSON: {' '.join(text.split())[:120]!r}") from None
    if not isinstance(doc, dict):
        raise GpuTopError(f"{what} answered JSON that is not an object: {' '.join(text.split())[:120]!r}")
    return doc


def skipped_vgpu_nodes(env: dict[str, str]) -> list[str]:
    nodes = _json(kubectl_get_raw(f"/api/v1/nodes?labelSelector={quote(VGPU_SELECTOR, safe='')}", env), "the API server")
    return sorted(item["metadata"]["name"] for item in nodes.get("items", []))


def samples_from_prometheus(target: str, env: dict[str, str]) -> list[Sample]:
    path = prometheus_path(target, query())
    return parse_prometheus(_json(kubectl_get_raw(path, env), "Prometheus"))


def dcgm_names_in_prometheus(target: str, env: dict[str, str]) -> list[str]:
    """The DCGM metric names Prometheus has (asked only when none is one gpu-top reads)."""
    samples = parse_prometheus(_json(kubectl_get_raw(prometheus_path(target, DCGM_NAMES_QUERY), env), "Prometheus"))
    return sorted({s.name for s in samples} - {""})


def alerts_from_prometheus(target: str, env: dict[str, str]) -> str:
    try:
        return format_alerts(parse_alerts(_json(kubectl_get_raw(alerts_path(target), env), "Prometheus")))
    except GpuTopError as err:  # the table is still worth showing
        return f"GPU alerts: not read ({err})\n"


def samples_from_exporters(env: dict[str, str], namespace: str = NAMESPACE) -> list[Sample]:
    pods = _json(
        kubectl_get_raw(f"/api/v1/namespaces/{namespace}/pods?labelSelector={quote(EXPORTER_SELECTOR, safe='')}", env),
        "the API server",
    )
    samples: list[Sample] = []
    for pod in pods.get("items", []):
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        name, node = pod["metadata"]["name"], (pod.get("spec") or {}).get("nodeName", "?")
        text = kubectl_get_raw(f"/api/v1/namespaces/{namespace}/pods/{name}:{EXPORTER_PORT}/proxy/metrics", env)
        samples += parse_exposition(text, extra={"kubernetes_node": node})
    return samples


def snapshot(args: argparse.Namespace, env: dict[str, str]) -> str:
    if args.source == "exporter":
        samples = samples_from_exporters(env)
        rows = gpu_rows(samples)
        found = sorted({s.name for s in samples if s.name.startswith("DCGM_")}) if not rows else []
        alerts = "GPU alerts: read from Prometheus, not with --source exporter\n"
    else:
        rows = gpu_rows(samples_from_prometheus(args.prometheus, env))
        found = [] if rows else dcgm_names_in_prometheus(args.prometheus, env)
        alerts = alerts_from_prometheus(args.prometheus, env)
    return format_table(rows, skipped_vgpu_nodes(env), found) + alerts


def _sleep(seconds: float) -> None:  # tests replace this, not time.sleep (subprocess uses it)
    time.sleep(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gpu_top", description=__doc__.split("\n\n")[0])
    parser.add_argument("--watch", type=float, metavar="N", help="refresh every N seconds (Ctrl-C stops)")
    parser.add_argument("--source", choices=("prometheus", "exporter"), default="prometheus")
    parser.add_argument("--prometheus", default=PROMETHEUS, metavar="NS/SERVICE:PORT", help=f"default {PROMETHEUS}")
    args = parser.parse_args(argv)
    if args.watch is not None and not 0 < args.watch <= 86400:  # also refuses nan and inf
        parser.error("--watch N: N must be a number of seconds above 0, at most 86400")
    try:
        _service_proxy(args.prometheus)  # a malformed target is said before any kubeconfig is looked for
        env = kubectl_env()
        if args.watch is None:
            sys.stdout.write(snapshot(args, env))
            return 0
        while True:
            table = snapshot(args, env)
            sys.stdout.write(f"\033[H\033[2J{time.strftime('%H:%M:%S')}  every {args.watch:g} s, Ctrl-C stops\n{table}")
            sys.stdout.flush()
            _sleep(args.watch)
    except GpuTopError as err:
        print(f"gpu-top: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
