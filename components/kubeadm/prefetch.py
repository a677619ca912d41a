"""Which images each node pulls while its driver builds (pure; the ``prefetch-images`` step).

The GPU stack says which images its pods run on GPU nodes (``GpuImages``, from
components/gpu/images.py through components/factory.py); this backend adds its own pod
network's. A version change in the config changes the list, and with it the step's command
and triggers: the next ``pulumi up`` pulls the new images.

Per node (``NodeImages.for_node``):
- every node: flannel and its CNI plugin (the flannel DaemonSet runs everywhere);
- GPU nodes: the device plugin and the GPU test image;
- GPU nodes of a pool where the monitoring component places dcgm-exporter: its image;
- the control plane additionally pulls kubeadm's images (``kubeadm config images pull``,
  in the script, with the image repository kubeadm-init uses).

``ctr images pull`` needs a fully qualified reference: ``qualify`` adds ``docker.io/`` (and
``library/`` for an official image) as containerd's reference docs spell it
(https://github.com/containerd/containerd/blob/main/docs/hosts.md, "docker.io" host
namespace; the CRI plugin normalises the same way through docker/reference).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from components.backend import GpuImages
from components.kubeadm import cni


def qualify(image: str) -> str:
    """``tensorflow/tensorflow:2.6.0-gpu`` -> ``docker.io/tensorflow/tensorflow:2.6.0-gpu``."""
    first, sep, rest = image.partition("/")
    if not sep:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


def _unique(images: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(qualify(i) for i in images if i))


@dataclass(frozen=True, kw_only=True)
class NodeImages:
    """The images to pull ahead, by where they run."""

    every_node: tuple[str, ...] = ()
    gpu_node: tuple[str, ...] = ()
    by_pool: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # pool -> extra images on its GPU nodes (last:
    # the exporter is not on the way to GPU-ready)
    gpu_last: tuple[str, ...] = ()  # GPU nodes, after the device plugin: the GPU test image

    def __post_init__(self):
        for image in (*self.every_node, *self.gpu_node, *self.gpu_last, *(i for v in self.by_pool.values() for i in v)):
            if not image or any(c.isspace() for c in image):
                raise ValueError(f"NodeImages: {image!r} is not an image reference")

    def for_node(self, pool: str, has_gpu: bool) -> tuple[str, ...]:
        """What one node pulls, fully qualified, each once, in a stable order."""
        extra = (*self.gpu_node, *self.gpu_last, *self.by_pool.get(pool, ())) if has_gpu else ()
        return _unique((*self.every_node, *extra))


def node_images(flannel_version: str, gpu: GpuImages) -> NodeImages:
    """What the nodes pull: this backend's pod network everywhere, the GPU stack's images on GPU nodes."""
    return NodeImages(every_node=cni.images(flannel_version), gpu_node=gpu.on_gpu_nodes, by_pool=gpu.by_pool, gpu_last=gpu.last)
