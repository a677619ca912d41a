"""`make gpu-top`: utilisation, memory, temperature and power per GPU per node, from DCGM.

    python -m tools.gpu_top [--watch N] [--prometheus NS/SERVICE:PORT] [--source exporter]

It reads through the Kubernetes API server with `kubectl get --raw` (the service proxy),
so no port is opened to the internet:

- ``--source prometheus`` (default): one instant query to the Prometheus that
  ``gpu-k8s:monitoring dcgm`` deploys (gpu-metrics/prometheus:web), or to the one given
  with ``--prometheus`` (e.g. a Prometheus Operator's, for ``monitoring: servicemonitor``).
- ``--source exporter``: each dcgm-exporter pod's /metrics, through the pod proxy.

GPU nodes the exporter skips (vGPU guests: DCGM does not support them) are listed below
the table. kubeconfig: $KUBECONFIG, else ./kubeconfig (`make kubeconfig`), else kubectl's own.
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
from pathlib import Path
from urllib.parse import quote

NAMESPACE = "gpu-metrics"
PROMETHEUS = f"{NAMESPACE}/prometheus:web"
EXPORTER_SELECTOR = "app.kubernetes.io/name=dcgm-exporter"
EXPORTER_PORT = 9400
VGPU_SELECTOR = "gpu-k8s/gpu-kind=vgpu"
UTIL, FB_USED, FB_FREE, FB_RESERVED = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_RESERVED",
)
TEMP, POWER = "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE"
FIELDS = (UTIL, FB_USED, FB_FREE, FB_RESERVED, TEMP, POWER)
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
    def memory_total(self) -> float | None:
        used, free = self.values.get(FB_USED), self.values.get(FB_FREE)
        if used is None or free is None:
            return None
        return used + free + (self.values.get(FB_RESERVED) or 0)


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


def format_table(rows: list[GpuRow], skipped_nodes: list[str] | None = None) -> str:
    header = ("NODE", "GPU", "MODEL", "UTIL", "MEMORY USED / TOTAL", "TEMP", "POWER")
    lines = [header]
    for r in rows:
        used, total = r.values.get(FB_USED), r.memory_total
        memory = "-" if used is None else f"{used:.0f} / {_fmt(total, '')} MiB"
        lines.append(
            (
                r.node,
                r.gpu,
                r.model or "-",
                _fmt(r.values.get(UTIL), " %"),
                memory,
                _fmt(r.values.get(TEMP), " C"),
                _fmt(r.values.get(POWER), " W", 1),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    right = {3, 4, 5, 6}
    text = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    if not rows:
        text.append("(no GPU samples: the exporter pods may still be starting, or no GPU node runs one)")
    for node in skipped_nodes or []:
        text.append(f"{node}: vGPU guest, no exporter (DCGM does not support vGPU guests); use nvidia-smi on the node")
    return "\n".join(text) + "\n"


def query() -> str:
    return '{__name__=~"' + "|".join(FIELDS) + '"}'


def prometheus_path(target: str, promql: str) -> str:
    """NS/SERVICE:PORT -> the API server's service-proxy path of an instant query."""
    m = re.match(r"^([a-z0-9-]+)/([a-z0-9-]+):([a-z0-9-]+)$", target)
    if not m:
        raise GpuTopError(
            f"--prometheus {target!r}: expected NAMESPACE/SERVICE:PORT, e.g. {PROMETHEUS} or monitoring/prometheus-operated:9090"
        )
    ns, svc, port = m.groups()
    return f"/api/v1/namespaces/{ns}/services/{svc}:{port}/proxy/api/v1/query?query={quote(promql, safe='')}"


# --- kubectl (I/O) -------------------------------------------------------------------------


def kubectl_env(env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, str]:
    """KUBECONFIG: as set, else ./kubeconfig (`make kubeconfig`), else kubectl's default."""
    env = dict(os.environ if env is None else env)
    local = (cwd or Path.cwd()) / "kubeconfig"
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
    samples = samples_from_exporters(env) if args.source == "exporter" else samples_from_prometheus(args.prometheus, env)
    return format_table(gpu_rows(samples), skipped_vgpu_nodes(env))


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
