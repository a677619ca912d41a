"""GPU Feature Discovery and the Node Feature Discovery master it needs: nvidia.com/* node labels.

GFD (in the device plugin's own image since v0.15) reads each GPU node through NVML and
publishes labels: ``nvidia.com/gpu.product`` (``-SHARED`` when time-sliced), ``gpu.memory``
(MiB), ``gpu.count``, ``gpu.family``, ``gpu.replicas``, ``gpu.sharing-strategy``,
``cuda.driver-version.*``, ``vgpu.present``, ``mig.capable`` and more
(NVIDIA/k8s-device-plugin v0.20.0 docs/gpu-feature-discovery/README.md). Since v0.19 it
writes them as a NodeFeature object (``nvidia-features-for-<node>``, owned by its pod) and
NFD's master turns NodeFeatures into node labels (cmd/gpu-feature-discovery/main.go
``use-node-feature-api`` default true; internal/lm/output.go). So:

- GFD: the Helm chart's DaemonSet (deployments/helm/nvidia-device-plugin/templates/
  daemonset-gfd.yml, v0.20.0): privileged ("required for the gpu-feature-discovery to access
  the vgpu info"), NODE_NAME/NAMESPACE/POD_NAME from the downward API, /sys and the features.d
  directory mounted, the chart's ClusterRole (nodes read, nodefeatures write, pods get). It
  reads the device plugin's config file, so ``gpu.replicas``, ``-SHARED`` and the sharing
  strategy match what the plugin advertises. NVIDIA's static GFD manifest gives none of the
  downward-API values and would exit ("required flag node-name not set").
- NFD v0.19.0 (the version that chart pins, Chart.yaml dependency): its three CRDs, vendored
  byte for byte (kubernetes-sigs/node-feature-discovery v0.19.0, 45d276ed,
  deployment/base/nfd-crds/nfd-api-crds.yaml, Apache-2.0, sha256 CRDS_SHA256), and
  nfd-master as the default overlay deploys it (deployment/base/master, rbac,
  components/common). No nfd-worker: its PCI label only selects GPU nodes, which already carry
  ``nvidia.com/gpu.present`` (GFD's affinity accepts either). No nfd-gc: a NodeFeature is owned
  by the GFD pod that wrote it, so Kubernetes deletes it with the pod.

GFD then owns the ``nvidia.com/gpu.*`` labels; the kubeadm backend stops setting
``nvidia.com/gpu.product`` itself. ``nvidia.com/gpu.present`` stays ours (GFD does not set it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.backend import GPU_NODE_LABEL, GPU_PRESENT_LABEL
from components.config.gpu import feature_discovery_supported
from components.gpu import device_plugin

NFD_VERSION = "v0.19.0"
NFD_IMAGE = f"registry.k8s.io/nfd/node-feature-discovery:{NFD_VERSION}"
NFD_NAMESPACE = "node-feature-discovery"
CRDS_FILE = Path(__file__).resolve().parent / "nfd" / "nfd-api-crds.yaml"
CRDS_SHA256 = "f8a40048b99110feaee4813dbb92ebfdaa3c7d722e1836a804207e22f72a9072"
GFD_NAME = "gpu-feature-discovery"
FEATURES_DIR = "/etc/kubernetes/node-feature-discovery/features.d"
# What GFD labels (its README), for the plan and the gpuNodes output.
GFD_LABELS = (
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.replicas",
    "nvidia.com/gpu.sharing-strategy",
    "nvidia.com/cuda.driver-version.full",
    "nvidia.com/vgpu.present",
    "nvidia.com/mig.capable",
)


def nfd_crds() -> list[dict]:
    """NFD's CRDs as upstream ships them (checked against CRDS_SHA256)."""
    raw = CRDS_FILE.read_bytes()
    if hashlib.sha256(raw).hexdigest() != CRDS_SHA256:
        raise ValueError(f"{CRDS_FILE.name} is not NFD {NFD_VERSION}'s file (sha256 differs)")
    return [doc for doc in yaml.safe_load_all(raw) if doc]


def nfd_master_spec() -> dict:
    """deployment/base/master/master-deployment.yaml with the default overlay's common patches."""
    labels = {"app": "nfd-master"}
    return {
        "replicas": 1,
        "selector": {"matchLabels": dict(labels)},
        "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {
                "serviceAccountName": "nfd-master",
                "enableServiceLinks": False,
                "affinity": {
                    "nodeAffinity": {
                        "preferredDuringSchedulingIgnoredDuringExecution": [
                            {
                                "weight": 1,
                                "preference": {
                                    "matchExpressions": [
                                        {"key": "node-role.kubernetes.io/control-plane", "operator": "In", "values": [""]}
                                    ]
                                },
                            }
                        ]
                    }
                },
                "tolerations": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Equal", "value": "", "effect": "NoSchedule"}
                ],
                "containers": [
                    {
                        "name": "nfd-master",
                        "image": NFD_IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["nfd-master"],
                        "env": [
                            {"name": "GOMEMLIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
                            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                        ],
                        "resources": {"limits": {"memory": "4Gi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "failureThreshold": 10},
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                            "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True,
                        },
                    }
                ],
            },
        },
    }


# deployment/base/rbac/master-clusterrole.yaml (v0.19.0).
NFD_MASTER_RULES = [
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["watch", "list"]},
    {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get", "patch", "update", "list"]},
    {
        "apiGroups": ["nfd.k8s-sigs.io"],
        "resources": ["nodefeatures", "nodefeaturerules", "nodefeaturegroups"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeaturegroups/status"], "verbs": ["patch", "update"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": ["nfd-master.nfd.kubernetes.io"],
        "verbs": ["get", "update"],
    },
]
# The device-plugin chart's ClusterRole with gfd.enabled (templates/role.yml).
GFD_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["nfd.k8s-sigs.io"], "resources": ["nodefeatures"], "verbs": ["get", "list", "watch", "create", "update"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
]


def gfd_daemonset_spec(image: str, mig_strategy: str, config_hash: str) -> dict:
    """The chart's GFD DaemonSet (daemonset-gfd.yml), on our GPU nodes, reading the plugin's config."""
    labels = {"app.kubernetes.io/name": GFD_NAME}
    env = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MIG_STRATEGY", "value": mig_strategy},
        {"name": "CONFIG_FILE", "value": f"{device_plugin.CONFIG_DIR}/{device_plugin.CONFIG_FILE}"},
    ]
    if mig_strategy != "none":
        env.append({"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"})
    return {
        "selector": {"matchLabels": dict(labels)},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            # GFD reads the shared config at start (SIGHUP reloads; no sidecar here): roll on a change.
            "metadata": {"labels": dict(labels), "annotations": {"gpu-k8s/config-sha256": config_hash}},
            "spec": {
                "serviceAccountName": GFD_NAME,
                "priorityClassName": "system-node-critical",
                "tolerations": [dict(t) for t in device_plugin.TOLERATIONS],
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": GPU_NODE_LABEL, "operator": "Exists"},
                                        {"key": GPU_PRESENT_LABEL, "operator": "In", "values": ["true"]},
                                    ]
                                }
                            ]
                        }
                    }
                },
                "containers": [
                    {
                        "name": "gpu-feature-discovery-ctr",
                        "image": image,
                        "command": ["gpu-feature-discovery"],
                        "env": env,
                        "securityContext": {"privileged": True},
                        "volumeMounts": [
                            {"name": "output-dir", "mountPath": FEATURES_DIR},
                            {"name": "host-sys", "mountPath": "/sys"},
                            {"name": "plugin-config", "mountPath": device_plugin.CONFIG_DIR, "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "output-dir", "hostPath": {"path": FEATURES_DIR, "type": "DirectoryOrCreate"}},
                    {"name": "host-sys", "hostPath": {"path": "/sys", "type": "Directory"}},
                    {"name": "plugin-config", "configMap": {"name": device_plugin.CONFIG_MAP_NAME}},
                ],
            },
        },
    }


@dataclass(frozen=True, kw_only=True)
class GpuFeatureDiscoveryArgs:
    plugin: device_plugin.NvidiaDevicePlugin  # GFD runs its image and reads its config file
    mig_strategy: str = "none"

    def __post_init__(self):
        version = self.plugin.image.rsplit(":", 1)[-1]
        if not feature_discovery_supported(version):
            raise ValueError(f"GpuFeatureDiscoveryArgs.plugin {version}: GFD here needs device plugin v0.19.0 or newer")


class GpuFeatureDiscovery(pulumi.ComponentResource):
    crds: list[k8s.apiextensions.v1.CustomResourceDefinition]
    nfd_master: k8s.apps.v1.Deployment
    daemonset: k8s.apps.v1.DaemonSet
    labels: tuple[str, ...]  # what GFD labels

    def __init__(self, name: str, args: GpuFeatureDiscoveryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:feature_discovery:GpuFeatureDiscovery", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.labels = GFD_LABELS
        self.crds = [
            k8s.apiextensions.v1.CustomResourceDefinition(
                f"{name}-crd-{crd['spec']['names']['plural']}",
                metadata=crd["metadata"],
                spec=crd["spec"],
                opts=child,
            )
            for crd in nfd_crds()
        ]
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NFD_NAMESPACE}, opts=child)
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        master_account = k8s.core.v1.ServiceAccount(
            f"{name}-nfd-master-account", metadata={"name": "nfd-master", "namespace": NFD_NAMESPACE}, opts=in_namespace
        )
        master_role = k8s.rbac.v1.ClusterRole(
            f"{name}-nfd-master-role", metadata={"name": "nfd-master"}, rules=NFD_MASTER_RULES, opts=child
        )
        master_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-nfd-master-binding",
            metadata={"name": "nfd-master"},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "nfd-master"},
            subjects=[{"kind": "ServiceAccount", "name": "nfd-master", "namespace": NFD_NAMESPACE}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[master_account, master_role]),
        )
        self.nfd_master = k8s.apps.v1.Deployment(
            f"{name}-nfd-master",
            metadata={
                "name": "nfd-master",
                "namespace": NFD_NAMESPACE,
                "labels": {"app": "nfd"},
                # Like every workload here: no 10-minute readiness wait inside `up` (its image may be slow to
                # pull in mainland China); the node labels follow whenever it runs.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec=nfd_master_spec(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.crds, master_binding]),
        )
        ns = device_plugin.NAMESPACE
        gfd_account = k8s.core.v1.ServiceAccount(f"{name}-gfd-account", metadata={"name": GFD_NAME, "namespace": ns}, opts=child)
        gfd_role = k8s.rbac.v1.ClusterRole(f"{name}-gfd-role", metadata={"name": GFD_NAME}, rules=GFD_RULES, opts=child)
        gfd_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-gfd-binding",
            metadata={"name": GFD_NAME},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": GFD_NAME},
            subjects=[{"kind": "ServiceAccount", "name": GFD_NAME, "namespace": ns}],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[gfd_account, gfd_role]),
        )
        config_hash = hashlib.sha256(yaml.safe_dump(args.plugin.config, sort_keys=False).encode()).hexdigest()
        self.daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-gfd",
            metadata={
                "name": GFD_NAME,
                "namespace": ns,
                "labels": {"app.kubernetes.io/name": GFD_NAME, "app.kubernetes.io/part-of": "nvidia-gpu"},
                "annotations": {"pulumi.com/skipAwait": "true"},  # pods wait for their node's driver
            },
            spec=gfd_daemonset_spec(args.plugin.image, args.mig_strategy, config_hash),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.crds, gfd_binding, args.plugin.config_map]),
        )
        self.register_outputs({"labels": list(self.labels), "nfdImage": NFD_IMAGE})
