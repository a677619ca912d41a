"""GPU metrics: NVIDIA's dcgm-exporter on the GPU nodes DCGM supports, and a small Prometheus.

The exporter DaemonSet mirrors NVIDIA's Helm chart ``deployment/`` (NVIDIA/dcgm-exporter,
tag 4.5.3-4.8.2, values.yaml and templates/daemonset.yaml, service.yaml,
metrics-configmap.yaml, service-monitor.yaml) field by field; the counters file is the
image's own ``etc/default-counters.csv`` at that tag (components/facts/dcgm/). Differences from
the chart, each needed here:

- Node selection by family (``exporter_variant``). DCGM's documented platforms are
  "bare-metal systems and virtual machines with full GPU passthrough" (DCGM install guide,
  docs.nvidia.com/datacenter/dcgm/latest/installation.html, "Supported Platforms"), so a
  GRID vGPU guest (vgn*/sgn*) gets no exporter. Its "Datacenter Profiling (DCP) metrics"
  (DCGM_FI_PROF_*) are "supported on Nvidia datacenter Volta GPUs and newer"
  (default-counters.csv at 4.5.3-4.8.2), so Pascal nodes (gn5i, Tesla P4) run a second
  DaemonSet with those rows removed and without SYS_ADMIN, which the chart adds only
  "for profiling metrics (DCGM_FI_PROF_*)".
- The exporter requests no ``nvidia.com/gpu``: the image sets NVIDIA_VISIBLE_DEVICES=all
  and containerd's default runtime is nvidia (20-container-runtime.sh), so it sees every
  GPU without taking one from the scheduler (time-slicing and MIG leave it alone).
- The counters ConfigMap's hash is a pod annotation: the exporter reads the file at start
  and a subPath mount never sees ConfigMap updates, so a changed file must roll the pods.

Prometheus is the official image (docker.io/prom/prometheus), one replica, ``emptyDir``
storage (``RETENTION`` and ``RETENTION_SIZE`` below: GPU metrics of the last day, lost
when the pod moves), discovering the exporter Service's endpoints in this namespace only,
so its RBAC is a namespaced Role. ``monitoring: servicemonitor`` replaces it with a
ServiceMonitor for an existing Prometheus Operator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.backend import GPU_NODE_LABEL, POOL_LABEL
from components.facts import catalog
from components.facts.dcgm import (
    COUNTERS_FILE,
    DEFAULT_COUNTERS,
    FULL,
    KNOWN_EXPORTER_RELEASES,
    MODES,
    NO_PROFILING,
    PROMETHEUS_REPO,
    SKIP,
    VARIANT_NOTES,
    counters_error,
    exporter_image,
    exporter_plan,
    exporter_version_ok,
    prometheus_version_ok,
    variant_counters,
)

NAMESPACE = "gpu-metrics"

# --- dcgm-exporter (what it is: components/facts/dcgm.py) ------------------------------
EXPORTER_NAME = "dcgm-exporter"
EXPORTER_PORT = 9400
COUNTERS_DIR = "/etc/dcgm-exporter"
COUNTERS_KEY = "metrics"  # the chart's ConfigMap key
POD_RESOURCES = "/var/lib/kubelet/pod-resources"

# --- Prometheus --------------------------------------------------------------------------
PROMETHEUS_NAME = "prometheus"
PROMETHEUS_PORT = 9090
PROMETHEUS_PORT_NAME = "web"
RETENTION = "24h"
RETENTION_SIZE = "1GB"  # below the emptyDir sizeLimit: exceeding that evicts the pod
STORAGE_LIMIT = "2Gi"
SCRAPE_INTERVAL = "15s"  # the chart's ServiceMonitor interval
SCRAPE_TIMEOUT = "10s"
NODE_TARGET_LABEL = "kubernetes_node"
CONFIG_FILE = "prometheus.yml"


def _node_affinity(pools: list[str]) -> dict:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": GPU_NODE_LABEL, "operator": "In", "values": [catalog.COMPUTE]},
                            {"key": POOL_LABEL, "operator": "In", "values": sorted(pools)},
                        ]
                    }
                ]
            }
        }
    }


def _exporter_labels(variant: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": EXPORTER_NAME, "gpu-k8s/dcgm-variant": variant}


def exporter_daemonset_spec(image: str, variant: str, pools: list[str], config_map: str, counters_hash: str) -> dict:
    """The chart's DaemonSet spec (defaults of values.yaml), per variant and node pools."""
    capabilities = {"add": ["SYS_ADMIN"], "drop": ["ALL"]} if variant == FULL else {"drop": ["ALL"]}
    probe = {"path": "/health", "port": EXPORTER_PORT, "scheme": "HTTP"}
    labels = _exporter_labels(variant)
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
                "affinity": _node_affinity(pools),
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


def prometheus_config(namespace: str = NAMESPACE) -> dict:
    """One scrape job: the exporter Service's endpoints, found through the API server."""
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_TIMEOUT, "evaluation_interval": "1m"},
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


def prometheus_deployment_spec(image: str, config_hash: str) -> dict:
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
                            f"--config.file=/etc/prometheus/{CONFIG_FILE}",
                            "--storage.tsdb.path=/prometheus",
                            f"--storage.tsdb.retention.time={RETENTION}",
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
                            {"name": "config", "mountPath": "/etc/prometheus", "readOnly": True},
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


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class GpuMonitoringArgs:
    mode: str  # dcgm | servicemonitor (none: do not construct the component)
    exporter_version: str  # a KNOWN_EXPORTER_RELEASES key, e.g. 4.6.0-4.8.3
    prometheus_version: str  # prom/prometheus tag, e.g. v3.14.0
    pools: dict[str, catalog.GpuProfile]  # GPU pool name -> its family profile
    counters: str | None = None  # a counters CSV; None = NVIDIA's default (DEFAULT_COUNTERS)

    @property
    def counters_csv(self) -> str:
        return DEFAULT_COUNTERS if self.counters is None else self.counters

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


class GpuMonitoring(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    exporters: dict[str, k8s.apps.v1.DaemonSet]  # variant -> DaemonSet
    service: k8s.core.v1.Service
    prometheus: k8s.apps.v1.Deployment | None
    service_monitor: k8s.apiextensions.CustomResource | None
    image: str  # the exporter image
    plan: dict[str, str]  # pool -> variant
    summary: dict  # the gpuMetrics stack output

    def __init__(self, name: str, args: GpuMonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:monitoring:GpuMonitoring", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.plan = exporter_plan(args.pools)
        self.image = exporter_image(args.exporter_version)
        self.exporters = {}
        self.prometheus = None
        self.service_monitor = None
        # "nodes" first: the plan's one-line view of this output is cut at 200 characters.
        self.summary = {"mode": args.mode, "nodes": {p: VARIANT_NOTES[v] for p, v in self.plan.items()}, "exporter": self.image}
        if all(v == SKIP for v in self.plan.values()):
            # Nothing DCGM supports: no namespace, no Prometheus scraping nothing.
            pulumi.log.warn(
                "gpu-k8s:monitoring: every GPU pool here is a vGPU guest, which DCGM does not support; "
                "no exporter or Prometheus is created (use nvidia-smi on the node)"
            )
            self.summary["read"] = "nothing to read: no GPU node here runs the exporter"
            self.register_outputs({"plan": self.plan, "summary": self.summary})
            return
        self.namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE}, opts=child)
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        for variant in (FULL, NO_PROFILING):
            pools = [pool for pool, v in self.plan.items() if v == variant]
            if pools:
                self._exporter(name, variant, pools, args.counters_csv)
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
            self._prometheus(name, args.prometheus_version, in_namespace)
            self.summary["read"] = f"make gpu-top, or kubectl get --raw '{prometheus_query_path()}'"
        else:
            self.service_monitor = k8s.apiextensions.CustomResource(
                f"{name}-service-monitor",
                api_version="monitoring.coreos.com/v1",
                kind="ServiceMonitor",
                metadata={"name": EXPORTER_NAME, "namespace": NAMESPACE, "labels": {"app.kubernetes.io/name": EXPORTER_NAME}},
                spec=service_monitor_spec(),
                opts=in_namespace,
            )
            self.summary["read"] = (
                f"your Prometheus Operator scrapes ServiceMonitor {NAMESPACE}/{EXPORTER_NAME}; "
                "make gpu-top GPU_TOP='--prometheus NS/SERVICE:PORT' (or '--source exporter')"
            )
        self.register_outputs({"plan": self.plan, "summary": self.summary})

    def _exporter(self, name: str, variant: str, pools: list[str], counters_csv: str) -> None:
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
            spec=exporter_daemonset_spec(self.image, variant, pools, f"{EXPORTER_NAME}-counters{suffix}", _sha256(counters)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, config_map]),
        )

    def _prometheus(self, name: str, version: str, opts: pulumi.ResourceOptions) -> None:
        config_text = yaml.safe_dump(prometheus_config(), sort_keys=False)
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
            data={CONFIG_FILE: config_text},
            opts=opts,
        )
        self.prometheus = k8s.apps.v1.Deployment(
            f"{name}-prometheus",
            metadata={"name": PROMETHEUS_NAME, "namespace": NAMESPACE, "annotations": {"pulumi.com/skipAwait": "true"}},
            spec=prometheus_deployment_spec(f"{PROMETHEUS_REPO}:{version}", _sha256(config_text)),
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
