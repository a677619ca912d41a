"""NVIDIA device plugin: NVIDIA's static DaemonSet, field by field, plus a config file.

Mirrors ``deployments/static/nvidia-device-plugin.yml`` (NVIDIA/k8s-device-plugin v0.20.0;
shared/reference/nvidia-gpu-on-kubernetes.md section 1.2). Two additions, both needed on
this cluster: a ConfigMap with the plugin's config file (MIG strategy, time-slicing) and a
required node affinity on the ``gpu-k8s/gpu-kind`` label, so a dedicated non-GPU control
plane never runs a plugin pod. From NVIDIA's Helm chart (same tag): the CriticalAddonsOnly
toleration and, with MIG only, SYS_ADMIN and NVIDIA_MIG_MONITOR_DEVICES=all. Beside it, a
``RuntimeClass`` ``nvidia`` for pods that ask for the NVIDIA runtime explicitly.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.backend import GPU_NODE_LABEL
from components.config import MAX_TIME_SLICING_REPLICAS, MIG_STRATEGIES
from components.config.gpu import device_plugin_version_ok

IMAGE_REPO = "nvcr.io/nvidia/k8s-device-plugin"
NAMESPACE = "kube-system"
DAEMONSET_NAME = "nvidia-device-plugin-daemonset"
CONFIG_MAP_NAME = "nvidia-device-plugin-config"
SELECTOR = {"name": "nvidia-device-plugin-ds"}
GPU_RESOURCE = "nvidia.com/gpu"
# The runtime nvidia-ctk adds to containerd (20-container-runtime) is named "nvidia"; this
# RuntimeClass lets a pod ask for it explicitly (the plugin README's alternative to the
# default runtime), as the GPU Operator's RuntimeClass does.
RUNTIME_CLASS = "nvidia"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"
CONFIG_DIR = "/etc/nvidia-device-plugin"
CONFIG_FILE = "config.yaml"
MAX_REPLICAS = MAX_TIME_SLICING_REPLICAS


def selector() -> str:
    """The plugin pods' label selector, e.g. for kubectl (``name=nvidia-device-plugin-ds``)."""
    return ",".join(f"{k}={v}" for k, v in SELECTOR.items())


@dataclass(frozen=True, kw_only=True)
class NvidiaDevicePluginArgs:
    version: str  # image tag, e.g. v0.20.0 (default) or v0.14.3 (the seed's)
    mig_strategy: str = "none"
    time_slicing_replicas: int = 1  # N > 1: each GPU is advertised as N nvidia.com/gpu

    def __post_init__(self):
        if not device_plugin_version_ok(self.version):
            raise ValueError(
                f"NvidiaDevicePluginArgs.version {self.version!r}: expected a tag v0.12.0 or newer "
                "(e.g. v0.20.0 or v0.14.3); older plugins read no config file"
            )
        if self.mig_strategy not in MIG_STRATEGIES:
            raise ValueError(
                f"NvidiaDevicePluginArgs.mig_strategy {self.mig_strategy!r}: expected one of {', '.join(MIG_STRATEGIES)}"
            )
        if isinstance(self.time_slicing_replicas, bool) or not 1 <= self.time_slicing_replicas <= MAX_REPLICAS:
            raise ValueError(
                f"NvidiaDevicePluginArgs.time_slicing_replicas {self.time_slicing_replicas!r}: expected 1 to {MAX_REPLICAS}"
            )
        if self.mig_strategy == "mixed" and self.time_slicing_replicas > 1:
            # Mixed MIG exposes nvidia.com/mig-<profile> resources; the nvidia.com/gpu
            # time-slicing entry written here would share nothing.
            raise ValueError(
                "NvidiaDevicePluginArgs: time slicing shares nvidia.com/gpu, which mig_strategy 'mixed' does not advertise"
            )


def image(version: str) -> str:
    """The plugin image for a tag: what the DaemonSet runs (and prefetch pulls ahead)."""
    return f"{IMAGE_REPO}:{version}"


def _plugin_config(mig_strategy: str, time_slicing_replicas: int) -> dict:
    """The plugin's config file (README "Configuration File", version v1)."""
    config: dict = {
        "version": "v1",
        # NVIDIA's static manifest sets FAIL_ON_INIT_ERROR=false (v0.14.3 and up to v0.17) so
        # the plugin idles on non-GPU nodes. Ours only lands on GPU nodes (node affinity), so
        # an init error is a real fault: crash-loop visibly (the default since v0.15, set
        # here for v0.14.x too) and let the allocatable check report the logs.
        "flags": {"migStrategy": mig_strategy, "failOnInitError": True},
    }
    if time_slicing_replicas > 1:
        config["sharing"] = {"timeSlicing": {"resources": [{"name": GPU_RESOURCE, "replicas": time_slicing_replicas}]}}
    return config


def _config_yaml(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False)


# NVIDIA's Helm chart (deployments/helm/nvidia-device-plugin, v0.20.0): with a MIG strategy
# other than none, templates/_helpers.tpl "requiresCapSysAdmin" replaces the container's
# securityContext by `capabilities: {add: [SYS_ADMIN]}`, and
# templates/daemonset-device-plugin.yml adds the env
# NVIDIA_MIG_MONITOR_DEVICES=all ("addMigMonitorDevices"). Without MIG: the static manifest's
# drop-ALL context, and no such env.
RESTRICTED_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
MIG_SECURITY_CONTEXT = {"capabilities": {"add": ["SYS_ADMIN"]}}
# values.yaml tolerations: CriticalAddonsOnly (kept by the chart "for backward
# compatibility") before the nvidia.com/gpu taint the static manifest tolerates.
TOLERATIONS = (
    {"key": "CriticalAddonsOnly", "operator": "Exists"},
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
)


def _container_security(mig_strategy: str) -> tuple[dict, list[dict]]:
    """(securityContext, extra env) of the plugin container, as NVIDIA's chart sets them."""
    if mig_strategy == "none":
        return copy.deepcopy(RESTRICTED_SECURITY_CONTEXT), []
    return copy.deepcopy(MIG_SECURITY_CONTEXT), [{"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"}]


def _daemonset_spec(image: str, config_hash: str, mig_strategy: str = "none") -> dict:
    """NVIDIA's static DaemonSet spec, plus the config file mount and the GPU-node affinity."""
    security, mig_env = _container_security(mig_strategy)
    return {
        "selector": {"matchLabels": dict(SELECTOR)},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {
                "labels": dict(SELECTOR),
                # The plugin reads its config once at start: a changed file must roll the pods.
                "annotations": {"gpu-k8s/config-sha256": config_hash},
            },
            "spec": {
                "tolerations": [dict(t) for t in TOLERATIONS],
                "priorityClassName": "system-node-critical",
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [{"key": GPU_NODE_LABEL, "operator": "Exists"}]}]
                        }
                    }
                },
                "containers": [
                    {
                        "image": image,
                        "name": "nvidia-device-plugin-ctr",
                        "env": [{"name": "CONFIG_FILE", "value": f"{CONFIG_DIR}/{CONFIG_FILE}"}, *mig_env],
                        "securityContext": security,
                        "volumeMounts": [
                            {"name": "kubelet-device-plugins-dir", "mountPath": DEVICE_PLUGIN_DIR},
                            {"name": "plugin-config", "mountPath": CONFIG_DIR, "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "kubelet-device-plugins-dir", "hostPath": {"path": DEVICE_PLUGIN_DIR, "type": "Directory"}},
                    {"name": "plugin-config", "configMap": {"name": CONFIG_MAP_NAME}},
                ],
            },
        },
    }


class NvidiaDevicePlugin(pulumi.ComponentResource):
    config_map: k8s.core.v1.ConfigMap
    daemonset: k8s.apps.v1.DaemonSet
    runtime_class: k8s.node.v1.RuntimeClass
    image: str
    config: dict  # the plugin config file, as written
    namespace: str
    selector: str  # label selector of the plugin pods, e.g. for kubectl
    fingerprint: str  # image and config: what the GPU test verifies of the plugin (smoke_test.py)

    def __init__(self, name: str, args: NvidiaDevicePluginArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:device_plugin:NvidiaDevicePlugin", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.image = image(args.version)
        self.config = _plugin_config(args.mig_strategy, args.time_slicing_replicas)
        self.namespace = NAMESPACE
        self.selector = selector()
        config_text = _config_yaml(self.config)
        self.fingerprint = hashlib.sha256(f"{self.image}\n{config_text}".encode()).hexdigest()[:12]
        self.config_map = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata={"name": CONFIG_MAP_NAME, "namespace": NAMESPACE},
            data={CONFIG_FILE: config_text},
            opts=child,
        )
        self.daemonset = k8s.apps.v1.DaemonSet(
            f"{name}-daemonset",
            metadata={
                "name": DAEMONSET_NAME,
                "namespace": NAMESPACE,
                # No silent 10-minute rollout wait: the smoke test's allocatable check
                # waits instead and prints the plugin's logs when GPUs don't appear.
                "annotations": {"pulumi.com/skipAwait": "true"},
            },
            spec=_daemonset_spec(self.image, hashlib.sha256(config_text.encode()).hexdigest(), args.mig_strategy),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.config_map]),
        )
        self.runtime_class = k8s.node.v1.RuntimeClass(
            f"{name}-runtime-class",
            metadata={"name": RUNTIME_CLASS},
            handler=RUNTIME_CLASS,
            opts=child,
        )
        self.register_outputs({"image": self.image, "namespace": NAMESPACE, "selector": self.selector, "config": self.config})
