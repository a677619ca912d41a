"""The stack configuration as the program uses it: frozen, typed, already validated (components/config/loader.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

import pulumi

from components.facts import catalog

MAX_NODES = 64


# ECS AutoReleaseTime must be at least 30 minutes and at most 3 years ahead
# (ModifyInstanceAutoReleaseTime API doc). Each node's time is anchored shortly before
# its RunInstances call, so the shortest TTL keeps a 15-minute margin above the API's
# 30 minutes for the resources created in between (VPC, vSwitch, key pair).
MIN_TTL_HOURS = Decimal("0.75")


MAX_TTL_HOURS = Decimal(3 * 365 * 24)


SMOKE_TESTS = ("vectoradd", "tensorflow", "none")


NODE_IMAGES = ("stock", "bake")
MIG_STRATEGIES = ("none", "single", "mixed")


# More than this many time-slices per GPU only starves each pod (and is a typo).
MAX_TIME_SLICING_REPLICAS = 48


# A DNS label: what hostnames and Kubernetes node names must be.
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


# An image reference: repository[:tag][@sha256:digest], lower-case, no spaces.
IMAGE_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:\d+/[a-z0-9._/-]+)?(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")


@dataclass(frozen=True, kw_only=True)
class NodePool:
    """A group of identical GPU nodes."""

    name: str
    instance_type: str
    count: int
    profile: catalog.GpuProfile
    hourly_price_cny: Decimal | None = None

    def node_names(self) -> list[str]:
        """Stable per-node names: adding nodes never renames existing ones."""
        return [f"{self.name}-{i}" for i in range(self.count)]


@dataclass(frozen=True, kw_only=True)
class AckSettings:
    """gpu-k8s:cluster ack: the managed cluster's settings (components/ack/backend.py)."""

    cluster_spec: str  # ack.pro.small (Pro, billed per hour) | ack.standard (Basic)
    kubernetes_version: str  # an ACK version such as 1.36.1-aliyun.1
    driver_version: str  # the node pools' NVIDIA driver (ack.aliyun.com/nvidia-driver-version)


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Everything the program needs, typed and validated."""

    stack: str
    region: str
    pools: tuple[NodePool, ...]
    control_plane_instance_type: str | None
    image_name_regex: str
    system_disk_gib: int
    public_bandwidth_mbps: int
    allowed_cidrs: tuple[str, ...]  # may contain "auto"
    ttl_hours: Decimal  # 0 = auto-release off
    spot: bool
    spot_price_limit: Decimal | None
    hourly_price_cny: Decimal | None
    driver_version: str
    grid_driver_version: str  # "" = by family (cuda.grid_driver_for)
    grid_driver_url: pulumi.Output[str] | None = field(compare=False)
    install_cuda_toolkit: bool
    cuda_toolkit_version: str
    container_toolkit_version: str
    install_docker: bool
    registry_mirrors: dict[str, str]
    kubernetes_version: str
    kubernetes_mirror: str  # resolved: "aliyun" or "upstream"
    pod_cidr: str
    flannel_version: str
    device_plugin_version: str
    mig_strategy: str
    time_slicing_replicas: int
    time_slicing_rename: bool  # advertise nvidia.com/gpu.shared (the plugin's renameByDefault)
    gpu_isolation: bool  # kubeadm: only allocated GPUs reach a container (toolkit + volume-mounts)
    smoke_test: str
    smoke_test_image: str | None
    smoke_test_cuda_version: str | None
    # GPU metrics (components/gpu/monitoring.py)
    monitoring: str  # dcgm | servicemonitor | none
    dcgm_exporter_version: str
    prometheus_version: str
    dcgm_counters: str | None  # a replacement counters CSV's text; None = NVIDIA's default
    prometheus_retention: str  # --storage.tsdb.retention.time of the in-cluster Prometheus
    service_monitor_labels: dict[str, str]  # added to the ServiceMonitor and PrometheusRule
    vgpu_metrics: bool  # run the exporter on vGPU guests too (profiling off)
    image_id: str | None = None  # pinned ECS image (None: newest match of image_name_regex)
    node_image: str = "stock"  # stock | bake (components/kubeadm/bake.py)
    zone_id: str | None = None  # pinned zone (None: the existing vSwitch's zone, else a lookup)
    gpu_test_run: str = ""  # gpu-k8s:gpuTestRun: a new value runs the GPU test again (make retest)
    cluster: str = "kubeadm"  # kubeadm | ack (components/backend.py)
    ack: AckSettings | None = None  # set when cluster is ack

    @property
    def instance_types(self) -> tuple[str, ...]:
        """Every instance type the stack creates (the zone must sell all of them)."""
        types = [p.instance_type for p in self.pools if p.count]
        if self.control_plane_instance_type:
            types.append(self.control_plane_instance_type)
        return tuple(dict.fromkeys(types))
