"""Two ways to get a cluster, one GPU stack above them: what the GPU stack needs from a cluster.

A backend builds the nodes and the control plane and hands the rest of the program:

- ``provider``: the Kubernetes provider (and ``kubeconfig``, a secret);
- ``gpu_nodes()``: the GPU nodes the test must cover, as :class:`GpuNode` (by name where
  the backend names its nodes, kubeadm; by node-pool label where the cloud names them, ACK);
- ``checks``: how a check script reads pod status and logs through the Kubernetes API
  (kubectl on the kubeadm control plane over SSH, or kubectl here with the kubeconfig);
- ``network_ready``: what the GPU stack's pods wait for (the pod network);
- what it already brings (a device plugin), what it bills and its outputs.

The backends (components/factory.py picks one; this module imports neither):

- ``kubeadm`` (components/kubeadm/): our own GPU ECS instances, the driver and runtime
  installed over SSH, kubeadm on the first node (or a dedicated control plane), flannel;
- ``ack`` (components/ack/): an ACK managed control plane with one GPU node pool per
  ``nodePools`` entry; ACK installs the driver, runtime, pod network and device plugin.

The device plugin, the smoke test and the reports never ask which one they run on. What
the GPU stack hands a backend goes the other way as plain data: ``GpuImages``, the images
its pods run, which a kubeadm node pulls ahead while its driver builds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import pulumi

from components.facts.catalog import GpuProfile

if TYPE_CHECKING:
    import pulumi_kubernetes as k8s

KUBEADM, ACK = "kubeadm", "ack"
BACKENDS = (KUBEADM, ACK)
# Labels every backend puts on its nodes, which the GPU stack selects on.
HOSTNAME_LABEL = "kubernetes.io/hostname"
POOL_LABEL = "gpu-k8s/pool"  # every node carries its pool's name (kubeadm: a NodePatch; ACK: the node pool's labels)
GPU_NODE_LABEL = "gpu-k8s/gpu-kind"  # on every GPU node: compute|vgpu (kubeadm; the plugin's affinity)
# Also on every GPU node: the label NVIDIA's device-plugin chart's default affinity (and GFD,
# DCGM exporter) select on (reference nvidia-gpu-on-kubernetes.md section 1.2).
GPU_PRESENT_LABEL = "nvidia.com/gpu.present"


@dataclass(frozen=True, kw_only=True)
class GpuImages:
    """The images the GPU stack's pods run on GPU nodes, by where (from components/gpu/images.py).

    ``on_gpu_nodes``: on every GPU node (the device plugin); ``by_pool``: on a pool's GPU nodes
    only (the exporter, where it runs there); ``last``: after those (the GPU test image: it is
    not on the way to allocatable GPUs).
    """

    on_gpu_nodes: tuple[str, ...] = ()
    by_pool: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    last: tuple[str, ...] = ()


class GpuNode(NamedTuple):
    """A GPU node the test covers: its name, what it is, the driver it runs, and where it is.

    ``selector`` empty: the node is named ``name`` (kubeadm), pods pin to it by hostname.
    Otherwise the cloud names the node (ACK): ``name`` is a slot (``<pool>-<i>``), the pods
    select the pool's label and spread one per node.
    """

    name: str
    profile: GpuProfile
    driver_version: str
    selector: tuple[tuple[str, str], ...] = ()
    pool: str = ""
    # What the GPU test verifies on this node (its instance, driver, runtime, cluster), as a
    # digest: when it changes the test runs again (new test pods, the checks re-run), so a
    # verdict always belongs to what runs now. "" for a node built outside a backend (tests).
    verifies: pulumi.Input[str] = ""

    @property
    def pinned(self) -> bool:
        return not self.selector

    @property
    def group(self) -> str:
        """``label=value[,...]`` of a node placed by label (the GPU_NODE_GROUPS key); "" when pinned."""
        return ",".join(f"{k}={v}" for k, v in self.selector)


# run(name, *, script, env, after, parent, timeout) -> a command resource whose stdout is the script's.
RunCheck = Callable[..., pulumi.CustomResource]


@dataclass(frozen=True, kw_only=True)
class ClusterChecks:
    """How the GPU checks (components/scripts/70-, 80-*.sh) reach the cluster."""

    run: RunCheck
    node_setup: str  # "gpu-k8s" (our node steps) or "ack": which fix the diagnoses name
    # Where a device plugin the backend brings runs (namespace, label selector), for the
    # diagnosis; empty: the GPU stack's own plugin (components/gpu/device_plugin.py).
    plugin_namespace: str = ""
    plugin_selector: str = ""
    # How long the GPUs may take to show up: kubeadm's nodes are set up before the check;
    # an ACK node pool may still be adding nodes and installing their driver (ack.py).
    allocatable_timeout_seconds: int = 300

    def __post_init__(self):
        if self.node_setup not in ("gpu-k8s", ACK):
            raise ValueError(f"ClusterChecks.node_setup {self.node_setup!r}: expected gpu-k8s or ack")


class ClusterBackend(Protocol):
    """What __main__.py and the GPU stack use; both backends provide exactly this."""

    kind: str
    provider: k8s.Provider
    kubeconfig: pulumi.Output[str]  # secret
    checks: ClusterChecks
    brings_device_plugin: bool  # ACK deploys its own NVIDIA device plugin
    network_ready: Sequence[pulumi.Resource]  # what pods wait for: the pod network (kubeadm: flannel; ACK: the pools)
    ready: Sequence[pulumi.Resource]  # what the GPU test waits for (node labels, node pools)
    api_endpoint: pulumi.Output[str]  # controlPlaneIp output: the API server's public address
    image_id: pulumi.Input[str]  # imageId output
    auto_release: pulumi.Input[str]  # autoReleaseTime output: when (or whether) the billing stops

    def gpu_nodes(self) -> list[GpuNode]: ...
    def describe_nodes(self) -> pulumi.Input[dict]: ...  # the `nodes` output
    def detected_gpus(self) -> Mapping[str, Mapping[str, pulumi.Input[str]]]: ...  # what nvidia-smi said, per node
    def timings(self) -> pulumi.Input[dict]: ...  # the `timings` output
    def cost(self) -> pulumi.Input[dict]: ...  # the `cost` output
    # gpu-k8s:nodeImage bake: node images still to bake, after ``after`` (kubeadm; ACK: none).
    def bake_images(self, after: list[pulumi.Resource]) -> list[pulumi.Resource]: ...


def digest(*parts: object) -> str:
    """12 hex of the SHA-256 of ``parts`` (JSON, sorted keys): a short, stable fingerprint."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def gpu_node_groups(nodes: Sequence[GpuNode]) -> dict[str, int]:
    """``label=value`` -> how many GPU nodes it must hold, for nodes placed by label (ACK)."""
    groups: dict[str, int] = {}
    for node in nodes:
        if node.group:
            groups[node.group] = groups.get(node.group, 0) + 1
    return groups
