"""The images the GPU stack's pods run on GPU nodes, by where (pure): what a backend pulls ahead.

Built from the same constants the manifests use (device plugin, GPU test, dcgm-exporter), so
a version change in the config changes the list: a kubeadm node pulls the new images while
its driver builds (components/kubeadm/prefetch.py, the ``prefetch-images`` step). Handed to
the backend as plain data (``GpuImages``, components/backend.py) by components/factory.py: a
backend never imports the GPU stack.
"""

from __future__ import annotations

from collections.abc import Mapping

from components.backend import GpuImages
from components.config import StackConfig
from components.facts import catalog, cuda, dcgm
from components.gpu import device_plugin


def gpu_images(
    *,
    device_plugin_version: str,
    test_image: str | None,
    exporter_version: str | None,
    pools: Mapping[str, catalog.GpuProfile],
    vgpu_metrics: bool = False,
) -> GpuImages:
    """``test_image``: the GPU test's image (None: no test); ``exporter_version``: the
    dcgm-exporter release (None: monitoring off)."""
    by_pool: dict[str, tuple[str, ...]] = {}
    if exporter_version is not None:
        image = dcgm.exporter_image(exporter_version)
        plan = dcgm.exporter_plan(dict(pools), vgpu_metrics)
        by_pool = {pool: (image,) for pool, variant in plan.items() if variant != dcgm.SKIP}
    return GpuImages(
        on_gpu_nodes=(device_plugin.image(device_plugin_version),),
        by_pool=by_pool,
        last=(test_image,) if test_image else (),
    )


def for_config(cfg: StackConfig) -> GpuImages:
    """gpu_images for a loaded StackConfig: the same choices __main__.py makes."""
    test_image = None
    if cfg.smoke_test != "none":
        drivers = [
            (cuda.node_driver(p.profile, cfg.driver_version, cfg.grid_driver_version), p.profile.driver)
            for p in cfg.pools
            if p.count
        ]
        test_image, _ = cuda.select_test_image(cfg.smoke_test, cfg.smoke_test_image, cfg.smoke_test_cuda_version, drivers)
    return gpu_images(
        device_plugin_version=cfg.device_plugin_version,
        test_image=test_image,
        exporter_version=cfg.dcgm_exporter_version if cfg.monitoring != "none" else None,
        pools={p.name: p.profile for p in cfg.pools},
        vgpu_metrics=cfg.vgpu_metrics,
    )
