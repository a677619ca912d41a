"""What dcgm-exporter and Prometheus are, and which exporter a GPU family gets (pure, dated, sourced).

Read by the config checks (components/config/: a release or counters file the program does
not know is refused before anything is created) and by the monitoring component
(components/gpu/monitoring.py), which deploys them.

Also pure data the component renders: NVIDIA's chart's DaemonSet spec
(``chart_daemonset_spec``) and the GPU alert rules (``alert_rules``: what each reads, its
threshold and where that comes from). The files beside this module (components/facts/dcgm/)
are NVIDIA's, Apache-2.0 (see NOTICE there): the image's default counters and the Grafana
dashboard of NVIDIA/dcgm-exporter at tag 4.5.3-4.8.2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
_FILES = Path(__file__).resolve().parent / "dcgm"
# The image's own etc/default-counters.csv at 4.5.3-4.8.2 (NVIDIA/dcgm-exporter), beside this module.
DEFAULT_COUNTERS = (_FILES / COUNTERS_FILE).read_text()
# Rows NVIDIA's default file has commented out that the program turns on in the file it
# writes (gpu-k8s:dcgmCountersCsv replaces the whole file, these included): the ECC alert
# reads the volatile double-bit count (DCGM field 311, "Total double bit volatile ecc
# errors"); a GPU without ECC reports DCGM's blank value, which the 4.x exporter skips
# (internal/pkg/collector/gpu_collector.go toString -> skipDCGMValue at 4.5.3-4.8.2).
ENABLED_ROWS = ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",)
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
FULL, NO_PROFILING, VGPU, SKIP = "full", "no-profiling", "vgpu", "skip"
VARIANTS = (FULL, NO_PROFILING, VGPU)  # the ones that run an exporter, in DaemonSet order
# vGPU guests (gpu-k8s:vgpuMetrics): DCGM's documented platforms are "bare-metal systems
# and virtual machines with full GPU passthrough" (DCGM install guide, "Supported
# Platforms"); dcgm-exporter#661 (GKE fractional vGPU: "Only node with full GPU has the
# metric") and PR #701 ("skip GPM/DCP metrics on fractional vGPU guests ... all standard
# DCGM metrics continue to be exported normally") say the profiling rows fail there and
# the standard ones work. Nobody has shown it on Aliyun's GRID guests (sgn/vgn).
VGPU_NOTE = (
    "standard metrics only; DCGM documents bare metal and passthrough: unverified on Aliyun GRID (dcgm-exporter#661, PR #701)"
)
VARIANT_NOTES = {
    FULL: "exporter, all counters",
    NO_PROFILING: "exporter without DCGM_FI_PROF_* (Pascal)",
    VGPU: f"exporter, {VGPU_NOTE}",
    SKIP: "none (vGPU guest: DCGM unsupported; see gpu-k8s:vgpuMetrics)",
}

# --- Grafana dashboard ------------------------------------------------------------------
# NVIDIA's grafana/dcgm-exporter-dashboard.json at tag 4.5.3-4.8.2 (commit 691c9276; the
# same bytes at main of 2026-05-12), Apache-2.0, byte for byte: components/facts/dcgm/NOTICE.
# Its panels read the 4.x names up to 4.8 (DCGM_FI_DEV_GPU_UTIL in %, FB_USED in MiB); its
# instance/gpu variables come from DCGM_FI_DEV_GPU_TEMP (empty where a GPU does not report
# it, dcgm-exporter#236). Datasource variable default: "Prometheus", kube-prometheus-stack's.
DASHBOARD_FILE = "dcgm-exporter-dashboard.json"
DASHBOARD_SHA256 = "7c2172e582524efb70d9f585502366f7fec22b2464c3b89f75418ca648353e71"
DASHBOARD_SOURCE = "NVIDIA/dcgm-exporter grafana/dcgm-exporter-dashboard.json at 4.5.3-4.8.2 (Apache-2.0)"
DASHBOARD = (_FILES / DASHBOARD_FILE).read_bytes().decode()  # tests check DASHBOARD_SHA256
# kube-prometheus-stack's Grafana sidecar (values.yaml grafana.sidecar.dashboards: label
# grafana_dashboard, labelValue "1", searchNamespace ALL) loads ConfigMaps with this label.
DASHBOARD_LABELS = {"grafana_dashboard": "1"}

# The chart's exporter container (deployment/values.yaml and templates at 4.5.3-4.8.2).
EXPORTER_PORT = 9400
COUNTERS_DIR = "/etc/dcgm-exporter"
COUNTERS_KEY = "metrics"  # the chart's ConfigMap key
POD_RESOURCES = "/var/lib/kubelet/pod-resources"

# GPU isolation (gpu-k8s:gpuIsolation on kubeadm: the toolkit's
# accept-nvidia-visible-devices-envvar-when-unprivileged = false and
# ...-as-volume-mounts = true): the image's NVIDIA_VISIBLE_DEVICES=all is then ignored unless
# the container counts as privileged, which for the toolkit is CAP_SYS_ADMIN in its bounding
# set (nvidia-container-toolkit v1.17.8 internal/config/image/privileged.go); the Pascal and
# vGPU variants drop it. /dev/null mounted at this path is the toolkit's volume-mount device
# list "all", read first when volume mounts are accepted (cmd/nvidia-container-runtime-hook/
# container_config.go getDevices; image.DevicesFromMounts, DeviceListAsVolumeMountsRoot): all
# GPUs, still unprivileged. Any pod allowed a hostPath can do the same (NVIDIA's trade-off).
ALL_GPUS_MOUNT = "/var/run/nvidia-container-devices/all"

# --- Prometheus --------------------------------------------------------------------------
PROMETHEUS_REPO = "docker.io/prom/prometheus"
RETENTION = "24h"  # the default of gpu-k8s:prometheusRetention
# Set with flags, not the config file's storage.tsdb.retention: v3.8+ marks the flags
# deprecated but still reads them, as the defaults when prometheus.yml has no retention
# section (cmd/prometheus/main.go at v3.14.0, "CLI flags act as the default"), and every v3.x
# gpu-k8s:prometheusVersion accepts them; older v3 releases refuse the config field.
_PROMETHEUS_TAG_RE = re.compile(r"^v(\d+)\.\d+\.\d+$")
MIN_PROMETHEUS_MAJOR = 3
# A Prometheus duration (prometheus/common model.ParseDuration): y w d h m s ms, largest first.
_PROMETHEUS_DURATION_RE = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")


def exporter_version_ok(release: str) -> bool:
    return release in KNOWN_EXPORTER_RELEASES


def prometheus_version_ok(tag: str) -> bool:
    m = _PROMETHEUS_TAG_RE.match(tag)
    return bool(m) and int(m.group(1)) >= MIN_PROMETHEUS_MAJOR


_DURATION_UNIT_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# ParseDuration refuses what overflows an int64 of nanoseconds (about 292 years): "duration out of range".
MAX_DURATION_MS = 100 * _DURATION_UNIT_MS["y"]


def prometheus_duration_ok(text: str) -> bool:
    """A Prometheus duration above zero and at most 100y, e.g. 24h, 7d, 1d12h."""
    if not text or not _PROMETHEUS_DURATION_RE.fullmatch(text):
        return False
    ms = sum(int(n) * _DURATION_UNIT_MS[unit] for n, unit in re.findall(r"(\d+)(ms|[ywdhms])", text))
    return 0 < ms <= MAX_DURATION_MS


def exporter_image(release: str) -> str:
    return f"{EXPORTER_REPO}:{release}-{KNOWN_EXPORTER_RELEASES[release]}"


def counter_fields(text: str) -> list[str]:
    """The fields a counters CSV turns on (its uncommented rows), in order."""
    return [m.group(1) for m in (_COUNTER_ROW.match(line.strip()) for line in text.splitlines()) if m]


def enable_rows(text: str, fields: tuple[str, ...] = ENABLED_ROWS) -> str:
    """The CSV with the commented-out rows of ``fields`` turned on ("# FIELD, type, help" ->
    "FIELD, type, help"); everything else unchanged."""
    out = []
    for line in text.splitlines(keepends=True):
        body = line.lstrip("#").lstrip()
        if line.startswith("#") and _COUNTER_ROW.match(body.strip()) and body.split(",")[0].strip() in fields:
            line = body
        out.append(line)
    return "".join(out)


# The file the exporter gets when gpu-k8s:dcgmCountersCsv is not set: NVIDIA's, ENABLED_ROWS on.
PROGRAM_COUNTERS = enable_rows(DEFAULT_COUNTERS)


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


def exporter_variant(profile: catalog.GpuProfile, vgpu_metrics: bool = False) -> str:
    """FULL, NO_PROFILING (Pascal), or for a vGPU guest VGPU (gpu-k8s:vgpuMetrics) or SKIP."""
    if profile.kind == catalog.VGPU:
        return VGPU if vgpu_metrics else SKIP
    if profile.gpu_model and _PASCAL_RE.match(profile.gpu_model):
        return NO_PROFILING
    return FULL


def variant_counters(counters: str, variant: str) -> str:
    """The counters file for a variant: Pascal and vGPU guests drop the DCGM_FI_PROF_* rows
    (the rest, DCGM_FI_DEV_VGPU_LICENSE_STATUS included, stays)."""
    if variant not in (NO_PROFILING, VGPU):
        return counters
    kept = [line for line in counters.splitlines() if not line.strip().startswith("DCGM_FI_PROF_")]
    return "\n".join(kept) + "\n"


def chart_daemonset_spec(
    image: str, variant: str, labels: dict, affinity: dict, config_map: str, counters_hash: str, isolation: bool = False
) -> dict:
    """NVIDIA's chart's DaemonSet spec (deployment/templates/daemonset.yaml with the defaults of
    values.yaml at 4.5.3-4.8.2) for a variant, with the given pod labels and node affinity; the
    differences are explained in components/gpu/monitoring.py. ``isolation``: the GPUs come as
    the toolkit's volume-mount device list (ALL_GPUS_MOUNT)."""
    capabilities = {"add": ["SYS_ADMIN"], "drop": ["ALL"]} if variant == FULL else {"drop": ["ALL"]}
    probe = {"path": "/health", "port": EXPORTER_PORT, "scheme": "HTTP"}
    all_gpus_volume = [{"name": "all-gpus", "hostPath": {"path": "/dev/null"}}] if isolation else []
    all_gpus_mount = [{"name": "all-gpus", "mountPath": ALL_GPUS_MOUNT, "readOnly": True}] if isolation else []
    return {
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {"labels": dict(labels), "annotations": {"gpu-k8s/counters-sha256": counters_hash}},
            "spec": {
                "priorityClassName": "system-node-critical",
                "hostPID": False,
                # The chart mounts a token only for pod labels/UID or DRA, both off.
                "automountServiceAccountToken": False,
                "affinity": affinity,
                "tolerations": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                ],
                "volumes": [
                    {"name": "pod-gpu-resources", "hostPath": {"path": POD_RESOURCES}},
                    {
                        "name": "exporter-metrics-volume",
                        "configMap": {"name": config_map, "items": [{"key": COUNTERS_KEY, "path": COUNTERS_FILE}]},
                    },
                    *all_gpus_volume,
                ],
                "containers": [
                    {
                        "name": "exporter",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": ["-f", f"{COUNTERS_DIR}/{COUNTERS_FILE}"],
                        "securityContext": {
                            "runAsNonRoot": False,
                            "runAsUser": 0,
                            "capabilities": capabilities,
                            "allowPrivilegeEscalation": False,
                        },
                        "env": [
                            {"name": "DCGM_EXPORTER_KUBERNETES", "value": "true"},
                            {"name": "DCGM_EXPORTER_LISTEN", "value": f":{EXPORTER_PORT}"},
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        ],
                        "ports": [{"name": "metrics", "containerPort": EXPORTER_PORT}],
                        "volumeMounts": [
                            {"name": "pod-gpu-resources", "readOnly": True, "mountPath": POD_RESOURCES},
                            {
                                "name": "exporter-metrics-volume",
                                "mountPath": f"{COUNTERS_DIR}/{COUNTERS_FILE}",
                                "subPath": COUNTERS_FILE,
                            },
                            *all_gpus_mount,
                        ],
                        "livenessProbe": {"httpGet": dict(probe), "initialDelaySeconds": 45, "periodSeconds": 5},
                        "readinessProbe": {"httpGet": dict(probe), "initialDelaySeconds": 45},
                        "resources": {
                            "limits": {"cpu": "200m", "memory": "512Mi"},
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                        },
                    }
                ],
            },
        },
    }


def exporter_plan(pools: dict[str, catalog.GpuProfile], vgpu_metrics: bool = False) -> dict[str, str]:
    """pool -> variant, for the plan and the gpuMetrics output."""
    return {pool: exporter_variant(profile, vgpu_metrics) for pool, profile in pools.items()}


# --- alert rules -------------------------------------------------------------------------
RULE_GROUP = "gpu-k8s-gpu"
# On every rule: `make gpu-top` shows the firing alerts that carry it (tools/gpu_top.py).
ALERT_LABELS = {"alert_source": "gpu-k8s"}
# Each rule names the counters it reads: a rule whose fields the exporter's counters file does
# not turn on is left out (it could never fire) and the gpuMetrics output says so. Where a
# GPU does not report a field, the 4.x exporter writes no sample (blank values are skipped:
# gpu_collector.go toString at 4.5.3-4.8.2), so no rule fires on DCGM's blank sentinels.


@dataclass(frozen=True)
class AlertRule:
    alert: str
    expr: str
    severity: str
    summary: str
    description: str
    needs: tuple[str, ...] = ()  # counters fields (uncommented CSV rows) the expression reads
    for_: str | None = None
    servicemonitor_only: bool = False  # needs kube-state-metrics, which only an Operator stack has

    def rule(self) -> dict:
        body: dict = {"alert": self.alert, "expr": self.expr}
        if self.for_:
            body["for"] = self.for_
        body["labels"] = {"severity": self.severity, **ALERT_LABELS}
        body["annotations"] = {"summary": self.summary, "description": self.description}
        return body


# Power: DCGM_FI_DEV_POWER_USAGE against a limit field, which NVIDIA's default counters do not
# list (4.5.3-4.8.2; the exporter adds them as opt-in rows only from 4.8.4, #719): the rule
# exists only when a gpu-k8s:dcgmCountersCsv turns one on. Field 164 is what the GPU
# enforces, 160 what was configured (go-dcgm const_fields.go).
POWER_LIMIT_FIELDS = ("DCGM_FI_DEV_ENFORCED_POWER_LIMIT", "DCGM_FI_DEV_POWER_MGMT_LIMIT")


def _power_rule(limit: str, where: str) -> AlertRule:
    # 95% for 15 minutes: a judgement (sustained power capping), not an NVIDIA number.
    return AlertRule(
        alert="GpuPowerNearLimit",
        expr=f"DCGM_FI_DEV_POWER_USAGE / {limit} > 0.95",
        for_="15m",
        severity="warning",
        summary=f"{where} draws over 95% of its power limit",
        description=(
            f"DCGM_FI_DEV_POWER_USAGE / {limit} above 0.95 for 15 minutes: the GPU is power-capped "
            "and lowers its clocks (nvidia-smi -q -d PERFORMANCE shows the throttle reasons)."
        ),
        needs=("DCGM_FI_DEV_POWER_USAGE", limit),
    )


def _rules(job: str, node: str, namespace: str) -> tuple[AlertRule, ...]:
    """The rules, for the exporter's Prometheus job, the node label and its namespace."""
    where = f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.{node} }}}}"
    return (
        AlertRule(
            # A gauge holding the last XID seen ("Value of the last XID error encountered",
            # default-counters.csv), not a count: after one XID the rule keeps firing.
            alert="GpuXidError",
            expr="DCGM_FI_DEV_XID_ERRORS > 0",
            severity="warning",
            summary=f"{where} reported XID {{{{ $value }}}}",
            description=(
                "DCGM_FI_DEV_XID_ERRORS is the last XID error the driver reported for this GPU (a gauge, "
                "not a count), so this keeps firing after one. Look the number up in NVIDIA's XID catalog "
                "(docs.nvidia.com/deploy/xid-errors): some come from the application (e.g. 13, 31, 43), "
                "others from the GPU (e.g. 48 double-bit ECC, 79 fallen off the bus); dmesg on the node has the detail."
            ),
            needs=("DCGM_FI_DEV_XID_ERRORS",),
        ),
        AlertRule(
            # DCGM field 311, "Total double bit volatile ecc errors" (dcgm_fields.h): commented out
            # in NVIDIA's default counters, turned on by ENABLED_ROWS in the file written here.
            alert="GpuEccDoubleBitErrors",
            expr="DCGM_FI_DEV_ECC_DBE_VOL_TOTAL > 0",
            severity="critical",
            summary=f"{where}: {{{{ $value }}}} uncorrectable (double-bit) ECC errors",
            description=(
                "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL counts uncorrectable memory errors since the driver loaded. "
                "Drain the node; a GPU reset or reboot clears the count, errors that return mean faulty hardware."
            ),
            needs=("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",),
        ),
        AlertRule(
            alert="GpuRowRemapFailure",
            expr="DCGM_FI_DEV_ROW_REMAP_FAILURE > 0",
            severity="critical",
            summary=f"{where} failed to remap a memory row",
            description=(
                "DCGM_FI_DEV_ROW_REMAP_FAILURE ('Whether remapping of rows has failed', Ampere and newer): "
                "the GPU could not retire memory after uncorrectable errors and needs service."
            ),
            needs=("DCGM_FI_DEV_ROW_REMAP_FAILURE",),
        ),
        AlertRule(
            # 85 C for 5 minutes: a judgement, not an NVIDIA number (community GPU rules use
            # 85-90 C, e.g. mitchross/k3s-argocd-proxmox gpu-alerts.yaml: > 90 for 2m); each GPU's
            # own slowdown temperature is in nvidia-smi, which the description points to.
            alert="GpuTemperatureHigh",
            expr="DCGM_FI_DEV_GPU_TEMP > 85",
            for_="5m",
            severity="warning",
            summary=f"{where} at {{{{ $value }}}} C for 5 minutes",
            description=(
                "DCGM_FI_DEV_GPU_TEMP above 85 C for 5 minutes. Compare with this GPU's 'GPU Slowdown Temp' "
                "(nvidia-smi -q -d TEMPERATURE): near it the GPU lowers its clocks."
            ),
            needs=("DCGM_FI_DEV_GPU_TEMP",),
        ),
        AlertRule(
            alert="GpuExporterDown",
            expr=f'up{{job="{job}"}} == 0',
            for_="5m",
            severity="warning",
            summary=f"dcgm-exporter on {{{{ $labels.{node} }}}} does not answer",
            description=(
                f"Prometheus cannot scrape it (pod crashing or not ready, node gone): no GPU metrics and no GPU "
                f"alerts from that node. kubectl -n {namespace} get pods -o wide"
            ),
        ),
        AlertRule(
            alert="GpuExporterMissing",
            expr=f'absent(up{{job="{job}"}})',
            for_="15m",
            severity="warning",
            summary="no dcgm-exporter is scraped at all",
            description=(
                "No exporter target: no exporter pod runs (no GPU node up, a pool scaled to zero, pods not "
                "scheduled), or with a Prometheus Operator the ServiceMonitor is not selected "
                "(gpu-k8s:serviceMonitorLabels must match its serviceMonitorSelector, e.g. release: kube-prometheus-stack)."
            ),
        ),
        AlertRule(
            # kube-state-metrics' kube_node_status_allocatable (resource="nvidia_com_gpu"): on nodes
            # where the exporter sees GPUs but the kubelet offers none, the device plugin is not
            # registered. Nothing the in-cluster Prometheus scrapes says what is allocatable, so
            # `monitoring: dcgm` has only GpuExporterDown; the `and on() count(...)` keeps the rule
            # quiet where kube-state-metrics is not scraped at all.
            alert="GpuNodeWithoutAllocatableGpus",
            expr=(
                f"(count by ({node}) (DCGM_FI_DEV_GPU_UTIL) unless on ({node}) "
                f'label_replace(kube_node_status_allocatable{{resource="nvidia_com_gpu"}} > 0, '
                f'"{node}", "$1", "node", "(.+)")) and on () count(kube_node_status_allocatable)'
            ),
            for_="10m",
            severity="warning",
            summary=f"{{{{ $labels.{node} }}}} has GPUs but no allocatable nvidia.com/gpu",
            description=(
                "dcgm-exporter sees GPUs on this node, kube-state-metrics reports no allocatable nvidia.com/gpu: "
                "the device plugin is not running or not registered, so GPU pods cannot start there."
            ),
            needs=("DCGM_FI_DEV_GPU_UTIL",),
            servicemonitor_only=True,
        ),
    )


def alert_rules(mode: str, counters: list[str], *, job: str, node: str, namespace: str) -> tuple[list[dict], dict[str, str]]:
    """(the rules for ``mode``, alert -> why it is left out) for the exporters' counters files."""
    fields = {f for text in counters for f in counter_fields(text)}
    candidates = list(_rules(job, node, namespace))
    limit = next((f for f in POWER_LIMIT_FIELDS if f in fields), None)
    if limit:
        candidates.insert(4, _power_rule(limit, f"GPU {{{{ $labels.gpu }}}} on {{{{ $labels.{node} }}}}"))
    rules: list[dict] = []
    left_out: dict[str, str] = {}
    if not limit:
        left_out["GpuPowerNearLimit"] = f"the counters list no power limit ({' or '.join(POWER_LIMIT_FIELDS)})"
    for rule in candidates:
        missing = [f for f in rule.needs if f not in fields]
        if rule.servicemonitor_only and mode != "servicemonitor":
            left_out[rule.alert] = "needs kube-state-metrics (monitoring: servicemonitor)"
        elif missing:
            left_out[rule.alert] = f"the counters lack {', '.join(missing)}"
        else:
            rules.append(rule.rule())
    return rules, left_out


def rule_groups(rules: list[dict]) -> list[dict]:
    """Prometheus rule groups (a rules file's ``groups``, a PrometheusRule's ``spec.groups``)."""
    return [{"name": RULE_GROUP, "rules": rules}]
