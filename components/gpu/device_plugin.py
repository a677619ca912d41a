"""NVIDIA device plugin: NVIDIA's static DaemonSet, field by field, plus a config file.

Mirrors ``deployments/static/nvidia-device-plugin.yml`` (NVIDIA/k8s-device-plugin v0.20.0;
shared/reference/nvidia-gpu-on-kubernetes.md section 1.2). Two additions, both needed on
this cluster: a ConfigMap with the plugin's config file (MIG strategy, time-slicing) and a
required node affinity on the ``gpu-k8s/gpu-kind`` label, so a dedicated non-GPU control
plane never runs a plugin pod. From NVIDIA's Helm chart (same tag): the CriticalAddonsOnly
toleration and, with MIG only, SYS_ADMIN and NVIDIA_MIG_MONITOR_DEVICES=all. Beside it, a
``RuntimeClass`` ``nvidia`` for pods that ask for the NVIDIA runtime explicitly.

GPU isolation (gpu-k8s:gpuIsolation, on by default): step 20 sets the NVIDIA Container
Toolkit's ``accept-nvidia-visible-devices-envvar-when-unprivileged = false`` and
``accept-nvidia-visible-devices-as-volume-mounts = true``, and the plugin passes each
container's devices as volume mounts (``flags.plugin.deviceListStrategy: volume-mounts``),
NVIDIA's documented way to stop a pod that sets NVIDIA_VISIBLE_DEVICES=all from seeing GPUs it
did not request (plugin README, "Setting other helm chart values"; toolkit
internal/config/config.go). Not CDI: in CDI mode the toolkit does not check an image's
NVIDIA_REQUIRE_CUDA (NVIDIA/nvidia-container-toolkit#1470), which the test image check relies
on. The plugin then needs the GPUs without an allocation: it runs privileged, as the GPU
Operator's plugin does (its env var is ignored otherwise), and with SYS_ADMIN as NVIDIA's chart
adds for volume-mounts.

Time-slicing: ``failRequestsGreaterThanOne`` (the plugin README: "recommended") refuses a
request for more than one slice, which would otherwise get two slices of the same GPU;
``renameByDefault`` (gpu-k8s:timeSlicingRenameByDefault) advertises ``nvidia.com/gpu.shared``.
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
    rename_shared: bool = False  # time-slicing: advertise nvidia.com/gpu.shared (renameByDefault)
    isolation: bool = False  # devices as volume mounts; the toolkit ignores NVIDIA_VISIBLE_DEVICES

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
            # Upstream can time-slice MIG devices under mixed by naming each nvidia.com/mig-<profile>;
            # this program's config names only nvidia.com/gpu, which would leave them unshared.
            raise ValueError(
                "NvidiaDevicePluginArgs: this program time-slices nvidia.com/gpu only; under mig_strategy 'mixed' the "
                "MIG devices (nvidia.com/mig-<profile>) would not be shared"
            )
        if self.rename_shared and self.time_slicing_replicas == 1:
            raise ValueError("NvidiaDevicePluginArgs.rename_shared needs time_slicing_replicas > 1")

    @property
    def resource(self) -> str:
        """The resource name a GPU pod requests: nvidia.com/gpu, or nvidia.com/gpu.shared when renamed."""
        return f"{GPU_RESOURCE}.shared" if self.rename_shared else GPU_RESOURCE


def image(version: str) -> str:
    """The plugin image for a tag: what the DaemonSet runs (and prefetch pulls ahead)."""
    return f"{IMAGE_REPO}:{version}"


def _plugin_config(
    mig_strategy: str, time_slicing_replicas: int, *, rename_shared: bool = False, isolation: bool = False
) -> dict:
    """The plugin's config file (README "Configuration File", version v1; api/config/v1)."""
    flags: dict = {
        "migStrategy": mig_strategy,
        # NVIDIA's static manifest sets FAIL_ON_INIT_ERROR=false (v0.14.3 and up to v0.17) so
        # the plugin idles on non-GPU nodes. Ours only lands on GPU nodes (node affinity), so
        # an init error is a real fault: crash-loop visibly (the default since v0.15, set
        # here for v0.14.x too) and let the allocatable check report the logs.
        "failOnInitError": True,
    }
    if isolation:
        flags["plugin"] = {"deviceListStrategy": "volume-mounts"}
    config: dict = {"version": "v1", "flags": flags}
    if time_slicing_replicas > 1:
        config["sharing"] = {
            "timeSlicing": {
                "renameByDefault": rename_shared,
                "failRequestsGreaterThanOne": True,
                "resources": [{"name": GPU_RESOURCE, "replicas": time_slicing_replicas}],
            }
        }
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


# With isolation the toolkit ignores the image's NVIDIA_VISIBLE_DEVICES=all in an unprivileged
# container, so the plugin (which must see every GPU to advertise it) runs privileged, as the
# GPU Operator's plugin does (assets/state-device-plugin/0500_daemonset.yaml).
ISOLATION_SECURITY_CONTEXT = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}


def _container_security(mig_strategy: str, isolation: bool = False) -> tuple[dict, list[dict]]:
    """(securityContext, extra env) of the plugin container, as NVIDIA's chart sets them."""
    mig_env = [] if mig_strategy == "none" else [{"name": "NVIDIA_MIG_MONITOR_DEVICES", "value": "all"}]
    if isolation:
        return copy.deepcopy(ISOLATION_SECURITY_CONTEXT), mig_env
    if mig_strategy == "none":
        return copy.deepcopy(RESTRICTED_SECURITY_CONTEXT), []
    return copy.deepcopy(MIG_SECURITY_CONTEXT), mig_env


def _daemonset_spec(image: str, config_hash: str, mig_strategy: str = "none", isolation: bool = False) -> dict:
    """NVIDIA's static DaemonSet spec, plus the config file mount and the GPU-node affinity."""
    security, mig_env = _container_security(mig_strategy, isolation)
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
    resource: str  # the extended resource a GPU pod requests (nvidia.com/gpu or nvidia.com/gpu.shared)

    def __init__(self, name: str, args: NvidiaDevicePluginArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:device_plugin:NvidiaDevicePlugin", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.image = image(args.version)
        self.config = _plugin_config(
            args.mig_strategy, args.time_slicing_replicas, rename_shared=args.rename_shared, isolation=args.isolation
        )
        self.resource = args.resource
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
            spec=_daemonset_spec(self.image, hashlib.sha256(config_text.encode()).hexdigest(), args.mig_strategy, args.isolation),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.config_map]),
        )
        self.runtime_class = k8s.node.v1.RuntimeClass(
            f"{name}-runtime-class",
            metadata={"name": RUNTIME_CLASS},
            handler=RUNTIME_CLASS,
            opts=child,
        )
        self.register_outputs({"image": self.image, "namespace": NAMESPACE, "selector": self.selector, "config": self.config})
