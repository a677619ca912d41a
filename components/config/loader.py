"""The one reader: every key of the stack, read once with ``pulumi.Config`` and validated by area.

Defaults live in Pulumi.yaml (the offline plan and the tests load them from there too); the
area modules beside this one only parse and check. Every mistake raises ConfigError naming
the key, the bad value and what is accepted, before any resource is registered; the checks
run in the order below, so the first mistake of a stack is the one reported.
"""

from __future__ import annotations

import pulumi
from pulumi.runtime.config import is_config_secret

from components.config.ack import parse_ack
from components.config.aliyun import (
    PROVIDER_SECRET_KEYS,
    check_provider_credentials,
    parse_cidrs,
    parse_control_plane_type,
    parse_image_id,
    parse_image_name_regex,
    parse_pools,
    parse_region,
    parse_spot_price_limit,
    parse_ttl_hours,
    parse_zone_id,
    warn_world_open,
)
from components.config.errors import PROJECT, ConfigError
from components.config.gpu import (
    check_mig_strategy,
    check_smoke_test,
    check_time_slicing_memory,
    check_time_slicing_rename,
    parse_device_plugin_version,
    parse_gpu_test_run,
    parse_monitoring,
    parse_smoke_test_cuda_version,
    parse_smoke_test_image,
    parse_time_slicing,
    warn_smoke_test_image_kind,
)
from components.config.kubeadm import (
    OFFLINE_SECRET_MARKER,
    check_drivers_fit_gpus,
    check_grid_driver_url,
    check_grid_driver_version_source,
    check_grid_install_path,
    check_registry_mirror_urls,
    check_releases,
    checked_pod_cidr,
    parse_container_toolkit_version,
    parse_cuda_toolkit_version,
    parse_driver_version,
    parse_flannel_version,
    parse_grid_driver_version,
    parse_kubernetes_version,
    parse_registry_mirrors,
    resolve_kubernetes_mirror,
    warn_unreachable_registries,
    warn_unverified_driver,
)
from components.config.model import MIG_STRATEGIES, NODE_IMAGES, SMOKE_TESTS, StackConfig
from components.config.schema import ACK_ONLY_KEYS, CLUSTER_BACKENDS, KUBEADM_ONLY_KEYS, check_backend_keys
from components.config.values import boolean, choice, json_value, parse_count, parse_price
from components.facts.catalog import TESLA


def _pool_keys(cfg: pulumi.Config, pools: tuple) -> tuple[str, ...]:
    """The key that names each pool's instance type in an error."""
    if cfg.get("instanceType"):
        return ("instanceType",)
    return tuple(f"nodePools[{i}].instanceType" for i in range(len(pools)))


def load_config() -> StackConfig:
    """Read and validate the whole stack config (raises ConfigError)."""
    cfg = pulumi.Config(PROJECT)
    provider = pulumi.Config("alicloud")
    region = parse_region(provider.get("region") or "")
    check_provider_credentials(
        {
            key: is_config_secret(f"alicloud:{key}") or provider.get(key) == OFFLINE_SECRET_MARKER
            for key in PROVIDER_SECRET_KEYS
            if provider.get(key)
        }
    )
    spot = boolean(cfg, "spot")
    spot_price_limit = parse_spot_price_limit(cfg.get("spotPriceLimit") or "", spot=spot)
    pools = parse_pools(
        cfg.get("instanceType") or "",
        cfg.get("nodeCount") or "",
        json_value(cfg, "nodePools", []),
        spot=spot,
    )
    cluster = choice("cluster", cfg.get("cluster") or "", CLUSTER_BACKENDS)
    check_backend_keys(cluster, {key: cfg.get(key) for key in (*KUBEADM_ONLY_KEYS, *ACK_ONLY_KEYS)})
    ack_settings = parse_ack(cfg, pools, region) if cluster == "ack" else None
    on_ack = ack_settings is not None
    control_plane_type = parse_control_plane_type(cfg.get("controlPlaneInstanceType") or "")
    smoke_test = choice("smokeTest", cfg.get("smokeTest") or "", SMOKE_TESTS)
    smoke_cuda = parse_smoke_test_cuda_version(cfg.get("smokeTestCudaVersion") or "")
    image_regex = parse_image_name_regex(cfg.get("imageNameRegex") or "")
    mig_strategy = choice("migStrategy", cfg.get("migStrategy") or "", MIG_STRATEGIES)
    time_slicing = parse_time_slicing(cfg.get("timeSlicingReplicas") or "", mig_strategy)
    check_mig_strategy(mig_strategy, pools)
    check_time_slicing_rename(boolean(cfg, "timeSlicingRenameByDefault"), time_slicing)
    driver_version = parse_driver_version(cfg.get("driverVersion") or "")
    grid_driver_version = parse_grid_driver_version(cfg.get("gridDriverVersion") or "")
    smoke_image = parse_smoke_test_image(cfg.get("smokeTestImage") or "")
    # On ACK every node pool runs the driver ACK installs (compute families only: parse_ack).
    test_driver = ack_settings.driver_version if ack_settings else driver_version
    if not on_ack:
        grid_url_set = bool(cfg.get("gridDriverUrl"))
        check_grid_driver_version_source(grid_driver_version, grid_url_set, pools)
        check_grid_install_path(pools, _pool_keys(cfg, pools), grid_url_set, grid_driver_version)
    check_drivers_fit_gpus(
        test_driver, grid_driver_version, pools, driver_key="ackNvidiaDriverVersion" if on_ack else "driverVersion"
    )
    check_smoke_test(smoke_test, smoke_image, smoke_cuda, pools, test_driver, grid_driver_version, ack=on_ack)
    warn_smoke_test_image_kind(smoke_test, smoke_image, smoke_cuda)
    check_time_slicing_memory(smoke_test, time_slicing, pools)
    registry_mirrors = parse_registry_mirrors(json_value(cfg, "registryMirrors", {}))
    check_registry_mirror_urls(registry_mirrors)
    if not on_ack:  # ACK pulls through its own node setup; registryMirrors is kubeadm-only
        warn_unreachable_registries(region, registry_mirrors)
    check_grid_driver_url(cfg.get("gridDriverUrl"))
    if not on_ack:
        warn_unverified_driver(driver_version, pools)
    grid_url = cfg.get_secret("gridDriverUrl")
    image_id = parse_image_id(cfg.get("imageId") or "")
    node_image = choice("nodeImage", cfg.get("nodeImage") or "", NODE_IMAGES)
    if node_image == "bake" and image_id:
        raise ConfigError(
            "nodeImage",
            node_image,
            "stock when gpu-k8s:imageId is set, or unset imageId",
            reason=f"a pinned imageId ({image_id}) is the image of every node, baked or not: a bake would never be used.",
        )
    if node_image == "bake" and any(p.profile.driver != TESLA for p in pools if p.count):
        pulumi.log.warn(
            "gpu-k8s:nodeImage bake: GRID (vGPU) images are baked per family, which Aliyun neither documents nor "
            "forbids (a copy of a guest whose GRID driver and licence its plugin installed); every node still runs "
            "11-nvidia-driver and 12-gpu-verify, which reinstall or report an unlicensed copy."
        )
    if boolean(cfg, "installDocker") and boolean(cfg, "gpuIsolation") and not on_ack:
        pulumi.log.warn(
            "gpu-k8s:gpuIsolation with installDocker: `docker run --gpus` passes GPUs in NVIDIA_VISIBLE_DEVICES, which "
            "the toolkit now ignores in a container without CAP_SYS_ADMIN: add --cap-add SYS_ADMIN (21-docker-gpu-check "
            "does), or set gpuIsolation false."
        )
    loaded = StackConfig(
        stack=pulumi.get_stack(),
        region=region,
        pools=pools,
        control_plane_instance_type=control_plane_type,
        image_name_regex=image_regex,
        system_disk_gib=parse_count("systemDiskGiB", cfg.get("systemDiskGiB") or "", minimum=20, maximum=500),
        public_bandwidth_mbps=parse_count("publicBandwidthMbps", cfg.get("publicBandwidthMbps") or "", maximum=100),
        allowed_cidrs=parse_cidrs(json_value(cfg, "allowedCidrs", None)) if not on_ack else (),
        ttl_hours=parse_ttl_hours(cfg.get("ttlHours") or ""),
        spot=spot,
        spot_price_limit=spot_price_limit,
        hourly_price_cny=parse_price("hourlyPriceCny", cfg.get("hourlyPriceCny") or ""),
        driver_version=driver_version,
        grid_driver_version=grid_driver_version,
        grid_driver_url=grid_url.apply(lambda u: u or "") if grid_url is not None else None,
        install_cuda_toolkit=boolean(cfg, "installCudaToolkit"),
        cuda_toolkit_version=parse_cuda_toolkit_version(cfg.get("cudaToolkitVersion") or ""),
        container_toolkit_version=parse_container_toolkit_version(cfg.get("containerToolkitVersion") or ""),
        install_docker=boolean(cfg, "installDocker"),
        registry_mirrors=registry_mirrors,
        kubernetes_version=parse_kubernetes_version(cfg.get("kubernetesVersion") or ""),
        kubernetes_mirror=resolve_kubernetes_mirror(cfg.get("kubernetesMirror") or "", region),
        pod_cidr=checked_pod_cidr(cfg.get("podCidr") or "", ack=on_ack),
        flannel_version=parse_flannel_version(cfg.get("flannelVersion") or ""),
        device_plugin_version=parse_device_plugin_version(cfg.get("devicePluginVersion") or ""),
        mig_strategy=mig_strategy,
        time_slicing_replicas=time_slicing,
        time_slicing_rename=boolean(cfg, "timeSlicingRenameByDefault"),
        gpu_isolation=boolean(cfg, "gpuIsolation"),
        smoke_test=smoke_test,
        smoke_test_image=smoke_image,
        smoke_test_cuda_version=smoke_cuda,
        **parse_monitoring(cfg),
        image_id=image_id,
        node_image=node_image,
        zone_id=parse_zone_id(cfg.get("zoneId") or "", region),
        cluster=cluster,
        ack=ack_settings,
        gpu_test_run=parse_gpu_test_run(cfg.get("gpuTestRun") or ""),
    )
    check_releases(loaded)
    warn_world_open(loaded.allowed_cidrs)
    return loaded
