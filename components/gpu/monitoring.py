"""GPU metrics: NVIDIA's dcgm-exporter on the GPU nodes DCGM supports, a small Prometheus
that evaluates GPU alert rules, and NVIDIA's Grafana dashboard.

The exporter DaemonSet mirrors NVIDIA's Helm chart ``deployment/`` (NVIDIA/dcgm-exporter,
tag 4.5.3-4.8.2, values.yaml and templates/daemonset.yaml, service.yaml,
metrics-configmap.yaml, service-monitor.yaml) field by field; the counters file is the
image's own ``etc/default-counters.csv`` at that tag (components/facts/dcgm/) with one
commented row turned on (``dcgm.ENABLED_ROWS``: the ECC double-bit count the ECC alert
reads). Differences from the chart, each needed here:

- Node selection by family (``exporter_variant``); the chart selects nothing
  (``nodeSelector: {}``, ``affinity: {}``). DCGM documents "bare-metal systems and virtual
  machines with full GPU passthrough" (DCGM install guide, "Supported Platforms"), so a GRID
  vGPU guest (vgn*/sgn*) gets no exporter unless ``gpu-k8s:vgpuMetrics`` asks for one. DCGM's
  profiling metrics (DCGM_FI_PROF_*) are "supported on Nvidia datacenter Volta GPUs and newer"
  (default-counters.csv), so Pascal nodes (gn5i, Tesla P4) run a second DaemonSet with those
  rows removed and without SYS_ADMIN, which the chart adds only "for profiling metrics";
  vGPU guests with vgpuMetrics a third, the same way (dcgm.VGPU_NOTE: unverified on GRID).
- The exporter requests no ``nvidia.com/gpu``: the image sets NVIDIA_VISIBLE_DEVICES=all
  and containerd's default runtime is nvidia (20-container-runtime.sh), so it sees every
  GPU without taking one from the scheduler (time-slicing and MIG leave it alone).
- It tolerates ``nvidia.com/gpu:NoSchedule`` besides the chart's control-plane toleration:
  a GPU node tainted for GPU pods only still gets its exporter.
- With GPU isolation (``gpu-k8s:gpuIsolation``, kubeadm) the toolkit ignores that variable
  in a container without CAP_SYS_ADMIN, so every variant then mounts /dev/null at
  ``dcgm.ALL_GPUS_MOUNT``, the toolkit's volume-mount device list "all" (sources there).
- The counters ConfigMap's hash is a pod annotation: the exporter reads the file at start
  and a subPath mount never sees ConfigMap updates, so a changed file must roll the pods.

Prometheus is the official image (docker.io/prom/prometheus), one replica, ``emptyDir``
storage (``gpu-k8s:prometheusRetention``, default 24h, and ``RETENTION_SIZE`` below: lost
when the pod moves; persistent storage would need a StorageClass, which a kubeadm cluster
here does not have), discovering the exporter Service's endpoints in this namespace only,
so its RBAC is a namespaced Role. It evaluates ``dcgm.alert_rules`` (a rules file in its
ConfigMap, ``rule_files`` in prometheus.yml); there is no Alertmanager, so firing alerts are
read from its /api/v1/alerts (``make gpu-top`` prints them). ``monitoring: servicemonitor``
replaces it with a ServiceMonitor and a PrometheusRule (the same rules, plus one that needs
kube-state-metrics) for an existing Prometheus Operator, both labelled with
``gpu-k8s:serviceMonitorLabels`` (kube-prometheus-stack selects on ``release: <release>``).
Both modes ship NVIDIA's Grafana dashboard as a ConfigMap labelled ``grafana_dashboard: "1"``,
which kube-prometheus-stack's Grafana sidecar loads from any namespace.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.backend import GPU_NODE_LABEL, POOL_LABEL
from components.facts import catalog, dcgm
from components.facts.dcgm import (
    COUNTERS_KEY,
    DASHBOARD,
    DASHBOARD_FILE,
    DASHBOARD_LABELS,
    EXPORTER_PORT,
    FULL,
    KNOWN_EXPORTER_RELEASES,
    MODES,
    PROGRAM_COUNTERS,
    PROMETHEUS_REPO,
    RETENTION,
    SKIP,
    VARIANT_NOTES,
    VARIANTS,
    VGPU,
    VGPU_NOTE,
    chart_daemonset_spec,
    counters_error,
    exporter_image,
    exporter_plan,
    exporter_version_ok,
    prometheus_duration_ok,
    prometheus_version_ok,
    rule_groups,
    variant_counters,
)

NAMESPACE = "gpu-metrics"

# --- dcgm-exporter (what it is: components/facts/dcgm.py) ------------------------------
EXPORTER_NAME = "dcgm-exporter"

# --- Prometheus --------------------------------------------------------------------------
PROMETHEUS_NAME = "prometheus"
PROMETHEUS_PORT = 9090
PROMETHEUS_PORT_NAME = "web"
RETENTION_SIZE = "1GB"  # below the emptyDir sizeLimit: exceeding that evicts the pod
STORAGE_LIMIT = "2Gi"
SCRAPE_INTERVAL = "15s"  # the chart's ServiceMonitor interval
SCRAPE_TIMEOUT = "10s"
NODE_TARGET_LABEL = "kubernetes_node"
CONFIG_FILE = "prometheus.yml"
RULES_FILE = "gpu-alerts.yml"
CONFIG_DIR = "/etc/prometheus"

# --- alerts and dashboard ------------------------------------------------------------------
DASHBOARD_NAME = f"{EXPORTER_NAME}-dashboard"


def _node_affinity(pools: list[str], kind: str) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_NODE_LABEL, "operator": "In", "values": [kind]},
                            {"key": POOL_LABEL, "operator": "In", "values": sorted(pools)},
                        ]
                    }
                ]
            }
        }
    }


def _exporter_labels(variant: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": EXPORTER_NAME, "gpu-k8s/dcgm-variant": variant}


def exporter_daemonset_spec(
    image: str, variant: str, pools: list[str], config_map: str, counters_hash: str, isolation: bool = False
) -> dict:
    """The chart's DaemonSet spec per variant, on the variant's node pools."""
    affinity = _node_affinity(pools, catalog.VGPU if variant == VGPU else catalog.COMPUTE)
    return chart_daemonset_spec(image, variant, _exporter_labels(variant), affinity, config_map, counters_hash, isolation)


def prometheus_config(namespace: str = NAMESPACE) -> dict:
    """One scrape job: the exporter Service's endpoints, found through the API server; the
    GPU alert rules (``RULES_FILE``, beside it in the ConfigMap)."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_TIMEOUT, "evaluation_interval": "1m"},
        "rule_files": [f"{CONFIG_DIR}/{RULES_FILE}"],
        "scrape_configs": [
            {
                "job_name": EXPORTER_NAME,
                "kubernetes_sd_configs": [{"role": "endpointslice", "namespaces": {"names": [namespace]}}],
                "relabel_configs": [
                    {
                        "source_labels": ["__meta_kubernetes_service_annotation_prometheus_io_scrape"],
                        "action": "keep",
                        "regex": "true",
                    },
                    {"source_labels": ["__meta_kubernetes_endpointslice_port_name"], "action": "keep", "regex": "metrics"},
                    {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": NODE_TARGET_LABEL},
                ],
            }
        ],
    }


def prometheus_deployment_spec(image: str, config_hash: str, retention: str = RETENTION) -> dict:
    labels = {"app.kubernetes.io/name": PROMETHEUS_NAME}
    return {
        "replicas": 1,
        "strategy": {"type": "Recreate"},  # never two writers on one TSDB
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {"labels": dict(labels), "annotations": {"gpu-k8s/config-sha256": config_hash}},
            "spec": {
                "serviceAccountName": PROMETHEUS_NAME,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534},
                "containers": [
                    {
                        "name": PROMETHEUS_NAME,
                        "image": image,
                        "args": [
                            f"--config.file={CONFIG_DIR}/{CONFIG_FILE}",
                            "--storage.tsdb.path=/prometheus",
                            f"--storage.tsdb.retention.time={retention}",
                            f"--storage.tsdb.retention.size={RETENTION_SIZE}",
                        ],
                        "ports": [{"name": PROMETHEUS_PORT_NAME, "containerPort": PROMETHEUS_PORT}],
                        "readinessProbe": {"httpGet": {"path": "/-/ready", "port": PROMETHEUS_PORT}, "periodSeconds": 10},
                        "livenessProbe": {
                            "httpGet": {"path": "/-/healthy", "port": PROMETHEUS_PORT},
                            "initialDelaySeconds": 30,
                            "periodSeconds": 15,
                        },
                        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [
                            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                            {"name": "data", "mountPath": "/prometheus"},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "config", "configMap": {"name": f"{PROMETHEUS_NAME}-config"}},
                    {"name": "data", "emptyDir": {"sizeLimit": STORAGE_LIMIT}},
                ],
            },
        },
    }


def prometheus_query_path(query: str = "DCGM_FI_DEV_GPU_UTIL", namespace: str = NAMESPACE) -> str:
    """The API server's service-proxy path to Prometheus' query API (kubectl get --raw)."""
    from urllib.parse import quote

    return (
        f"/api/v1/namespaces/{namespace}/services/{PROMETHEUS_NAME}:{PROMETHEUS_PORT_NAME}/proxy"
        f"/api/v1/query?query={quote(query, safe='')}"
    )


def prometheus_alerts_path(namespace: str = NAMESPACE) -> str:
    """The service-proxy path to Prometheus' alerts API: what the rules fire, with no Alertmanager."""
    return f"/api/v1/namespaces/{namespace}/services/{PROMETHEUS_NAME}:{PROMETHEUS_PORT_NAME}/proxy/api/v1/alerts"


def service_monitor_spec(namespace: str = NAMESPACE) -> dict:
    """The chart's ServiceMonitor (templates/service-monitor.yaml), plus the node label."""
    return {
        "selector": {"matchLabels": {"app.kubernetes.io/name": EXPORTER_NAME}},
        "namespaceSelector": {"matchNames": [namespace]},
        "endpoints": [
            {
                "port": "metrics",
                "path": "/metrics",
                "interval": SCRAPE_INTERVAL,
                "scrapeTimeout": SCRAPE_TIMEOUT,
                "honorLabels": False,
                "relabelings": [
                    {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": NODE_TARGET_LABEL, "action": "replace"}
                ],
            }
        ],
    }


def alert_rules(mode: str, counters: list[str]) -> tuple[list[dict], dict[str, str]]:
    """dcgm.alert_rules for this component's job (the exporter Service), node label and namespace."""
    return dcgm.alert_rules(mode, counters, job=EXPORTER_NAME, node=NODE_TARGET_LABEL, namespace=NAMESPACE)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class GpuMonitoringArgs:
    mode: str  # dcgm | servicemonitor (none: do not construct the component)
    exporter_version: str  # a KNOWN_EXPORTER_RELEASES key, e.g. 4.6.0-4.8.3
    prometheus_version: str  # prom/prometheus tag, e.g. v3.14.0
    pools: dict[str, catalog.GpuProfile]  # GPU pool name -> its family profile
    counters: str | None = None  # a counters CSV; None = NVIDIA's default with ENABLED_ROWS on (PROGRAM_COUNTERS)
    retention: str = RETENTION  # gpu-k8s:prometheusRetention: --storage.tsdb.retention.time (dcgm mode)
    service_monitor_labels: dict[str, str] = field(default_factory=dict)  # on the ServiceMonitor and PrometheusRule
    vgpu_metrics: bool = False  # gpu-k8s:vgpuMetrics: the exporter on vGPU guests too, profiling off
    gpu_isolation: bool = False  # the nodes' toolkit ignores NVIDIA_VISIBLE_DEVICES (kubeadm gpuIsolation)

    @property
    def counters_csv(self) -> str:
        return PROGRAM_COUNTERS if self.counters is None else self.counters

    def __post_init__(self):
        if self.mode not in MODES[:2]:
            raise ValueError(f"GpuMonitoringArgs.mode {self.mode!r}: expected dcgm or servicemonitor")
        if not exporter_version_ok(self.exporter_version):
            known = ", ".join(KNOWN_EXPORTER_RELEASES)
            raise ValueError(f"GpuMonitoringArgs.exporter_version {self.exporter_version!r}: expected one of {known}")
        if not prometheus_version_ok(self.prometheus_version):
            raise ValueError(f"GpuMonitoringArgs.prometheus_version {self.prometheus_version!r}: expected a tag v3.x.y or newer")
        if not self.pools:
            raise ValueError("GpuMonitoringArgs.pools is empty")
        problem = counters_error(self.counters_csv)
        if problem:
            raise ValueError(f"GpuMonitoringArgs.counters: {problem}")
        if not prometheus_duration_ok(self.retention):
            raise ValueError(f"GpuMonitoringArgs.retention {self.retention!r}: expected a Prometheus duration such as 24h or 7d")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.service_monitor_labels.items()):
            raise ValueError("GpuMonitoringArgs.service_monitor_labels: expected a map of strings to strings")


class GpuMonitoring(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    exporters: dict[str, k8s.apps.v1.DaemonSet]  # variant -> DaemonSet
    service: k8s.core.v1.Service
    prometheus: k8s.apps.v1.Deployment | None
    service_monitor: k8s.apiextensions.CustomResource | None
    prometheus_rule: k8s.apiextensions.CustomResource | None
    dashboard: k8s.core.v1.ConfigMap | None
    image: str  # the exporter image
    plan: dict[str, str]  # pool -> variant
    rules: list[dict]  # the alert rules (Prometheus rule format)
    summary: dict  # the gpuMetrics stack output

    def __init__(self, name: str, args: GpuMonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:monitoring:GpuMonitoring", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.plan = exporter_plan(args.pools, args.vgpu_metrics)
        self.image = exporter_image(args.exporter_version)
        self.exporters = {}
        self.prometheus = None
        self.service_monitor = None
        self.prometheus_rule = None
        self.dashboard = None
        self.rules = []
        # "nodes" first: the plan's one-line view of this output is cut at 200 characters.
        self.summary = {"mode": args.mode, "nodes": {p: VARIANT_NOTES[v] for p, v in self.plan.items()}, "exporter": self.image}
        if all(v == SKIP for v in self.plan.values()):
            # Nothing DCGM supports: no namespace, no Prometheus scraping nothing.
            pulumi.log.warn(
                "gpu-k8s:monitoring: every GPU pool here is a vGPU guest, which DCGM does not support; "
                "no exporter or Prometheus is created (use nvidia-smi on the node, or set gpu-k8s:vgpuMetrics "
                "true for an exporter with standard metrics only)"
            )
            self.summary["read"] = "nothing to read: no GPU node here runs the exporter"
            self.register_outputs({"plan": self.plan, "summary": self.summary})
            return
        vgpu_pools = sorted(p for p, v in self.plan.items() if v == VGPU)
        if vgpu_pools:
            pulumi.log.warn(f"gpu-k8s:vgpuMetrics: dcgm-exporter on vGPU pool(s) {', '.join(vgpu_pools)}: {VGPU_NOTE}")
        self.namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE}, opts=child)
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        counters_files = []
        for variant in VARIANTS:
            pools = [pool for pool, v in self.plan.items() if v == variant]
            if pools:
                counters_files.append(self._exporter(name, variant, pools, args.counters_csv, args.gpu_isolation))
        self.rules, left_out = alert_rules(args.mode, counters_files)
        self.service = k8s.core.v1.Service(
            f"{name}-exporter-service",
            metadata={
                "name": EXPORTER_NAME,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": EXPORTER_NAME},
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(EXPORTER_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            spec={
                "type": "ClusterIP",
                "internalTrafficPolicy": "Cluster",
                "ports": [{"name": "metrics", "port": EXPORTER_PORT, "targetPort": EXPORTER_PORT, "protocol": "TCP"}],
                "selector": {"app.kubernetes.io/name": EXPORTER_NAME},
            },
            opts=in_namespace,
        )
        if args.mode == "dcgm":
            self._prometheus(name, args, in_namespace)
            self.summary["read"] = f"make gpu-top, or kubectl get --raw '{prometheus_query_path()}'"
            where = f"in-cluster Prometheus (no Alertmanager): make gpu-top, or kubectl get --raw '{prometheus_alerts_path()}'"
            self.summary["retention"] = f"{args.retention} (at most {RETENTION_SIZE}) in an emptyDir: lost when the pod moves"
        else:
            labels = {"app.kubernetes.io/name": EXPORTER_NAME, **args.service_monitor_labels}
            self.service_monitor = k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata={"name": EXPORTER_NAME, "namespace": NAMESPACE, "labels": dict(labels)},
                spec=service_monitor_spec(),
                opts=in_namespace,
            )
            self.prometheus_rule = k8s.apiextensions.CustomResource(
                f"{name}-prometheus-rule",
                api_version="monitoring.coreos.com/v1",
                kind="PrometheusRule",
                metadata={"name": f"{EXPORTER_NAME}-alerts", "namespace": NAMESPACE, "labels": dict(labels)},
                spec={"groups": rule_groups(self.rules)},
                opts=in_namespace,
            )
            self.summary["read"] = (
                f"your Prometheus Operator scrapes ServiceMonitor {NAMESPACE}/{EXPORTER_NAME}; "
                "make gpu-top GPU_TOP='--prometheus NS/SERVICE:PORT' (or '--source exporter')"
            )
            where = f"PrometheusRule {NAMESPACE}/{EXPORTER_NAME}-alerts, routed by your Alertmanager"
            if not args.service_monitor_labels:
                self.summary["selected"] = (
                    "no gpu-k8s:serviceMonitorLabels: kube-prometheus-stack selects ServiceMonitors and "
                    "PrometheusRules on release: <its Helm release>"
                )
        self.summary["alerts"] = {"rules": [r["alert"] for r in self.rules], "where": where, "left out": left_out}
        self.dashboard = k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={
                "name": DASHBOARD_NAME,
                "namespace": NAMESPACE,
                "labels": {"app.kubernetes.io/name": EXPORTER_NAME, **DASHBOARD_LABELS},
            },
            data={DASHBOARD_FILE: DASHBOARD},
            opts=in_namespace,
        )
        self.summary["dashboard"] = (
            f'ConfigMap {NAMESPACE}/{DASHBOARD_NAME} (grafana_dashboard: "1"): NVIDIA\'s dcgm-exporter dashboard, '
            "loaded by kube-prometheus-stack's Grafana sidecar"
        )
        self.register_outputs({"plan": self.plan, "summary": self.summary})

    def _exporter(self, name: str, variant: str, pools: list[str], counters_csv: str, isolation: bool) -> str:
        """The variant's counters ConfigMap and DaemonSet; returns the counters file it gets."""
        suffix = "" if variant == FULL else f"-{variant}"
        counters = variant_counters(counters_csv, variant)
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-counters{suffix}",
            metadata={"name": f"{EXPORTER_NAME}-counters{suffix}", "namespace": NAMESPACE},
            data={COUNTERS_KEY: counters},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace]),
        )
        self.exporters[variant] = k8s.apps.v1.DaemonSet(
            f"{name}-exporter{suffix}",
            metadata={
                "name": f"{EXPORTER_NAME}{suffix}",
                "namespace": NAMESPACE,
                "labels": _exporter_labels(variant),
                # Pods wait for their node's driver; a rollout wait would only hold up `up`.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec=exporter_daemonset_spec(
                self.image, variant, pools, f"{EXPORTER_NAME}-counters{suffix}", _sha256(counters), isolation
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, config_map]),
        )
        return counters

    def _prometheus(self, name: str, args: GpuMonitoringArgs, opts: pulumi.ResourceOptions) -> None:
        config_text = yaml.safe_dump(prometheus_config(), sort_keys=False)
        rules_text = yaml.safe_dump({"groups": rule_groups(self.rules)}, sort_keys=False, width=1000)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-prometheus-account", metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE}, opts=opts
        )
        role = k8s.rbac.v1.Role(
            f"{name}-prometheus-role",
            metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
            rules=[
                {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            ],
            opts=opts,
        )
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-prometheus-binding",
            metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": PROMETHEUS_NAME},
            subjects=[{"kind": "ServiceAccount", "name": PROMETHEUS_NAME, "namespace": NAMESPACE}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, role]),
        )
        config_map = k8s.core.v1.ConfigMap(
            f"{name}-prometheus-config",
            metadata={"name": f"{PROMETHEUS_NAME}-config", "namespace": NAMESPACE},
            data={CONFIG_FILE: config_text, RULES_FILE: rules_text},
            opts=opts,
        )
        # Prometheus reads both files at start only (no --web.enable-lifecycle): a change rolls the pod.
        self.prometheus = k8s.apps.v1.Deployment(
            f"{name}-prometheus",
            metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE, "annotations": {"pulumi.com/skipAwait": "true"}},
            spec=prometheus_deployment_spec(
                f"{PROMETHEUS_REPO}:{args.prometheus_version}", _sha256(config_text + rules_text), args.retention
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[binding, config_map]),
        )
        k8s.core.v1.Service(
            f"{name}-prometheus-service",
            metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE},
            spec={
                "type": "ClusterIP",
                "ports": [{"name": PROMETHEUS_PORT_NAME, "port": PROMETHEUS_PORT, "targetPort": PROMETHEUS_PORT}],
                "selector": {"app.kubernetes.io/name": PROMETHEUS_NAME},
            },
            opts=opts,
        )
