"""Which images each node pulls while its driver builds (pure; the ``prefetch-images`` step).

The image references are built from the same constants the manifests use (cni, device_plugin,
smoke_test/cuda, monitoring), so a version change in the config changes the list, and with
it the step's command and triggers: the next ``pulumi up`` pulls the new images.

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

from components.facts import catalog, cuda
from components.gpu import device_plugin, monitoring
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


def node_images(
    *,
    flannel_version: str,
    device_plugin_version: str,
    test_image: str | None,
    exporter_version: str | None,
    pools: Mapping[str, catalog.GpuProfile],
) -> NodeImages:
    """The images the manifests will run, from the same constants (see the module docstring).

    ``test_image``: the GPU test's image (None: no test); ``exporter_version``: the
    dcgm-exporter release (None: monitoring off).
    """
    flannel = cni.images(flannel_version)
    by_pool: dict[str, tuple[str, ...]] = {}
    if exporter_version is not None:
        image = monitoring.exporter_image(exporter_version)
        by_pool = {
            pool: (image,) for pool, variant in monitoring.exporter_plan(dict(pools)).items() if variant != monitoring.SKIP
        }
    return NodeImages(
        every_node=flannel,
        gpu_node=(device_plugin.image(device_plugin_version),),
        by_pool=by_pool,
        gpu_last=(test_image,) if test_image else (),
    )


def from_config(cfg) -> NodeImages:
    """node_images for a loaded StackConfig (components/config.py): the same choices __main__ makes."""
    test_image = None
    if cfg.smoke_test != "none":
        drivers = [
            (cuda.node_driver(p.profile, cfg.driver_version, cfg.grid_driver_version), p.profile.driver)
            for p in cfg.pools
            if p.count
        ]
        test_image, _ = cuda.select_test_image(cfg.smoke_test, cfg.smoke_test_image, cfg.smoke_test_cuda_version, drivers)
    return node_images(
        flannel_version=cfg.flannel_version,
        device_plugin_version=cfg.device_plugin_version,
        test_image=test_image,
        exporter_version=cfg.dcgm_exporter_version if cfg.monitoring != "none" else None,
        pools={p.name: p.profile for p in cfg.pools},
    )
