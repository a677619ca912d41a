"""Which cluster the stack gets (gpu-k8s:cluster), built: the one place that knows both backends.

Above the backends and the GPU stack: the backend interface (components/backend.py) imports
neither, and a backend never imports the GPU stack. What a backend needs to know of the GPU
stack, the images its pods run (which a kubeadm node pulls ahead while its driver builds),
is handed down here as plain data.
"""

from __future__ import annotations

from components.ack.backend import AckCluster
from components.aliyun.network import Network
from components.aliyun.ssh_key import SshKey
from components.backend import ACK, ClusterBackend
from components.config import StackConfig
from components.gpu import images
from components.kubeadm.backend import KubeadmBackend


def create_cluster(cfg: StackConfig, network: Network, ssh_key: SshKey) -> ClusterBackend:
    """The backend gpu-k8s:cluster names, built (nodes, control plane, pod network, Kubernetes provider)."""
    if cfg.cluster == ACK:
        return AckCluster.from_config("gpu-k8s", cfg, network, ssh_key)
    return KubeadmBackend(cfg, network, ssh_key, images.for_config(cfg))
