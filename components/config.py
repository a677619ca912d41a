"""Stack configuration: read once, validated, frozen.

This is the only module that calls ``pulumi.Config``. Defaults live in Pulumi.yaml
(the offline plan and the tests load them from there too); this module only parses
and checks. Every mistake raises :class:`ConfigError` naming the key, the bad value
and what is accepted, before any resource is registered.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import pulumi

from components import catalog, cuda, downloads

PROJECT = "gpu-k8s"

MAX_NODES = 64
# ECS AutoReleaseTime must be at least 30 minutes and at most 3 years ahead.
MIN_TTL_HOURS = Decimal("0.5")
MAX_TTL_HOURS = Decimal(3 * 365 * 24)

SMOKE_TESTS = ("vectoradd", "tensorflow", "none")
MIG_STRATEGIES = ("none", "single", "mixed")
# More than this many time-slices per GPU only starves each pod (and is a typo).
MAX_TIME_SLICING_REPLICAS = 48
KUBERNETES_MIRRORS = ("auto", "aliyun", "upstream")

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")
# A DNS label: what hostnames and Kubernetes node names must be.
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_POOL_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$")
_K8S_VERSION_RE = re.compile(r"^1\.(\d{2})\.\d{1,2}$")
# The NVIDIA Container Toolkit lines step 20 is tested with (tests/test_runtime_real.py runs
# the real nvidia-ctk 1.17.8 and 1.18.0): 1.17 edits config.toml, 1.18 writes a drop-in.
_TOOLKIT_VERSION_RE = re.compile(r"^1\.1[78]\.\d{1,2}$")
SUPPORTED_TOOLKITS = "a 1.17.x or 1.18.x release (the supported NVIDIA Container Toolkit lines), e.g. 1.17.8"
_CUDA_VERSION_RE = re.compile(r"^\d{1,2}\.\d{1,2}$")
_IMAGE_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+$")
# An image reference: repository[:tag][@sha256:digest], lower-case, no spaces.
IMAGE_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:\d+/[a-z0-9._/-]+)?(:[\w][\w.-]{0,127})?(@sha256:[0-9a-f]{64})?$")
# The device plugin reads its config file (CONFIG_FILE) since v0.12.0.
MIN_DEVICE_PLUGIN_VERSION = (0, 12)
_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?$")
_MIRROR_URL_RE = re.compile(r"^https?://[^\s\"'\\]+$")
# Oldest and newest Kubernetes minors this program's kubeadm config and manifests target.
K8S_MIN_MINOR, K8S_MAX_MINOR = 28, 35


class ConfigError(pulumi.RunError):
    """A user mistake in stack config: reported as one line, no traceback."""

    def __init__(self, key: str, value: object, accepted: str, *, reason: str | None = None):
        self.key, self.value, self.accepted = key, value, accepted
        shown = value if isinstance(value, str) else json.dumps(value)
        why = f": {reason} Expected {accepted}" if reason else f"; expected {accepted}"
        super().__init__(f"{_qualified(key)}: {shown!r} is not accepted{why}")


def _qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


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
    smoke_test: str
    smoke_test_image: str | None
    smoke_test_cuda_version: str | None

    @property
    def instance_types(self) -> tuple[str, ...]:
        """Every instance type the stack creates (the zone must sell all of them)."""
        types = [p.instance_type for p in self.pools if p.count]
        if self.control_plane_instance_type:
            types.append(self.control_plane_instance_type)
        return tuple(dict.fromkeys(types))


# --- parsing helpers (pure) -------------------------------------------------------


def parse_region(value: str) -> str:
    if not value:
        raise ConfigError("alicloud:region", value, "a region id such as cn-hangzhou (set alicloud:region)")
    if not _REGION_RE.match(value):
        raise ConfigError("alicloud:region", value, "a region id such as cn-hangzhou or ap-southeast-1")
    return value


def parse_cidrs(values: object) -> tuple[str, ...]:
    key = "allowedCidrs"
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise ConfigError(key, values, 'a non-empty list of CIDRs such as ["203.0.113.7/32"] or ["auto"]')
    cidrs: list[str] = []
    for item in values:
        if item == "auto":
            cidrs.append("auto")
            continue
        try:
            net = ipaddress.ip_network(str(item), strict=True)
        except ValueError:
            raise ConfigError(key, item, 'a CIDR such as 203.0.113.7/32 (host bits zero) or "auto"') from None
        if net.version != 4:
            raise ConfigError(key, item, "an IPv4 CIDR (Aliyun classic security group rules here are IPv4)")
        cidrs.append(str(net))
    return tuple(dict.fromkeys(cidrs))


def parse_decimal(key: str, value: str, *, accepted: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(key, value, accepted) from None
    if not number.is_finite():
        raise ConfigError(key, value, accepted)
    return number


def parse_ttl_hours(value: str) -> Decimal:
    accepted = f'0 (off) or a number of hours from {MIN_TTL_HOURS} to {MAX_TTL_HOURS} (3 years), e.g. "4" or "1.5"'
    hours = parse_decimal("ttlHours", value, accepted=accepted)
    if hours == 0:
        return Decimal(0)
    if hours < MIN_TTL_HOURS or hours > MAX_TTL_HOURS:
        raise ConfigError("ttlHours", value, accepted)
    return hours


def parse_price(key: str, value: str) -> Decimal | None:
    if str(value).strip() == "":
        return None
    accepted = "a non-negative price in CNY with at most 3 decimals, e.g. 1.8"
    price = parse_decimal(key, value, accepted=accepted)
    if price < 0 or price.as_tuple().exponent < -3:
        raise ConfigError(key, value, accepted)
    return price


def parse_count(key: str, value: object, *, minimum: int = 1, maximum: int = MAX_NODES) -> int:
    accepted = f"a whole number from {minimum} to {maximum}"
    if isinstance(value, bool):
        raise ConfigError(key, value, accepted)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(key, value, accepted) from None
    if not minimum <= number <= maximum:
        raise ConfigError(key, value, accepted)
    return number


def parse_pools(instance_type: str, node_count: object, node_pools: object, *, spot: bool) -> tuple[NodePool, ...]:
    if node_pools and instance_type:
        raise ConfigError(
            "nodePools",
            "(set together with gpu-k8s:instanceType)",
            "either gpu-k8s:nodePools or the gpu-k8s:instanceType/nodeCount shorthand, not both",
        )
    if not node_pools:
        if not instance_type:
            raise ConfigError("instanceType", "", "a GPU instance type such as ecs.gn6i-c4g1.xlarge, or gpu-k8s:nodePools")
        count = parse_count("nodeCount", node_count)
        return (_pool("gpu", instance_type, count, None, key="instanceType", spot=spot),)
    if not isinstance(node_pools, list):
        raise ConfigError("nodePools", node_pools, "a list of {name, instanceType, count} objects")
    pools: list[NodePool] = []
    for i, raw in enumerate(node_pools):
        key = f"nodePools[{i}]"
        if not isinstance(raw, dict) or set(raw) - {"name", "instanceType", "count", "hourlyPriceCny"}:
            raise ConfigError(key, raw, "an object with keys name, instanceType, count and optional hourlyPriceCny")
        name = str(raw.get("name", ""))
        if not _POOL_NAME_RE.match(name):
            raise ConfigError(f"{key}.name", name, "a lower-case name of 1-16 letters, digits or '-', starting with a letter")
        if name in (p.name for p in pools):
            raise ConfigError(f"{key}.name", name, "a pool name used only once")
        count = parse_count(f"{key}.count", raw.get("count", ""), minimum=0)
        price = parse_price(f"{key}.hourlyPriceCny", raw.get("hourlyPriceCny", ""))
        pools.append(_pool(name, str(raw.get("instanceType", "")), count, price, key=f"{key}.instanceType", spot=spot))
    total = sum(p.count for p in pools)
    if total < 1 or total > MAX_NODES:
        raise ConfigError("nodePools", f"{total} nodes in all", f"1 to {MAX_NODES} GPU nodes in all")
    return tuple(pools)


def _pool(name: str, instance_type: str, count: int, price: Decimal | None, *, key: str, spot: bool) -> NodePool:
    try:
        profile = catalog.profile_for(instance_type)
    except catalog.UnknownInstanceType as err:
        raise ConfigError(key, instance_type, err.accepted) from None
    if spot and profile.spot_available is False:
        raise ConfigError(key, instance_type, "an instance type sold as spot (this family is not), or gpu-k8s:spot false")
    return NodePool(name=name, instance_type=instance_type, count=count, profile=profile, hourly_price_cny=price)


def parse_registry_mirrors(value: object) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            "registryMirrors", value, 'a map of registry -> mirror URL, e.g. {"docker.io": "https://<id>.mirror.aliyuncs.com"}'
        )
    mirrors: dict[str, str] = {}
    for registry, url in value.items():
        if not _REGISTRY_RE.match(str(registry)):
            raise ConfigError(f"registryMirrors.{registry}", registry, "a registry host such as docker.io or nvcr.io")
        if not isinstance(url, str) or not _MIRROR_URL_RE.match(url):
            raise ConfigError(f"registryMirrors.{registry}", url, "an http(s) mirror URL without spaces or quotes")
        mirrors[str(registry)] = url.rstrip("/")
    return mirrors


def _match(key: str, value: str, pattern: re.Pattern[str], accepted: str) -> str:
    if not pattern.match(value):
        raise ConfigError(key, value, accepted)
    return value


def _choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
    return value


def parse_container_toolkit_version(value: str) -> str:
    return _match("containerToolkitVersion", value, _TOOLKIT_VERSION_RE, SUPPORTED_TOOLKITS)


def parse_kubernetes_version(value: str) -> str:
    accepted = f"MAJOR.MINOR.PATCH from 1.{K8S_MIN_MINOR}.0 to 1.{K8S_MAX_MINOR}.x, e.g. 1.34.2"
    m = _K8S_VERSION_RE.match(value)
    if not m or not K8S_MIN_MINOR <= int(m.group(1)) <= K8S_MAX_MINOR:
        raise ConfigError("kubernetesVersion", value, accepted)
    return value


def resolve_kubernetes_mirror(value: str, region: str) -> str:
    _choice("kubernetesMirror", value, KUBERNETES_MIRRORS)
    if value == "auto":
        return "aliyun" if region.startswith("cn-") else "upstream"
    return value


def parse_driver_version(value: str) -> str:
    """A Tesla driver version whose branch the CUDA table knows (it decides the test image)."""
    accepted = f"an NVIDIA driver version of branch {min(cuda.BRANCH_MAX_CUDA)} or newer, e.g. 535.129.03"
    try:
        cuda.driver_cuda(value)
    except ValueError:
        raise ConfigError("driverVersion", value, accepted) from None
    return value


def device_plugin_version_ok(tag: str) -> bool:
    m = re.match(r"^v(\d+)\.(\d+)\.\d+$", tag)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= MIN_DEVICE_PLUGIN_VERSION


def parse_device_plugin_version(value: str) -> str:
    if not device_plugin_version_ok(value):
        raise ConfigError("devicePluginVersion", value, "an image tag v0.12.0 or newer, e.g. v0.20.0 or the seed's v0.14.3")
    return value


def parse_pod_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError("podCidr", value, "an IPv4 CIDR of /8 to /20, e.g. 10.244.0.0/16") from None
    if net.version != 4 or not 8 <= net.prefixlen <= 20:
        raise ConfigError("podCidr", value, "an IPv4 CIDR of /8 to /20, e.g. 10.244.0.0/16")
    return str(net)


# --- the one reader ------------------------------------------------------------------


def load_config() -> StackConfig:
    """Read and validate the whole stack config (raises ConfigError)."""
    cfg = pulumi.Config(PROJECT)
    region = parse_region(pulumi.Config("alicloud").get("region") or "")
    spot = _bool(cfg, "spot")
    spot_price_limit = parse_price("spotPriceLimit", cfg.get("spotPriceLimit") or "")
    if spot_price_limit is not None and not spot:
        raise ConfigError("spotPriceLimit", str(spot_price_limit), "no price limit unless gpu-k8s:spot is true")
    pools = parse_pools(
        cfg.get("instanceType") or "",
        cfg.get("nodeCount") or "",
        _object(cfg, "nodePools", []),
        spot=spot,
    )
    control_plane_type = cfg.get("controlPlaneInstanceType") or None
    if control_plane_type is not None:
        _check_control_plane_type(control_plane_type)
    smoke_test = _choice("smokeTest", cfg.get("smokeTest") or "", SMOKE_TESTS)
    smoke_cuda = cfg.get("smokeTestCudaVersion") or None
    if smoke_cuda is not None:
        _match("smokeTestCudaVersion", smoke_cuda, _CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 11.4 or 12.2")
    image_regex = cfg.get("imageNameRegex") or ""
    try:
        re.compile(image_regex)
    except re.error:
        raise ConfigError("imageNameRegex", image_regex, "a valid regular expression over image names") from None
    mig_strategy = _choice("migStrategy", cfg.get("migStrategy") or "", MIG_STRATEGIES)
    time_slicing = parse_count("timeSlicingReplicas", cfg.get("timeSlicingReplicas") or "", maximum=MAX_TIME_SLICING_REPLICAS)
    if mig_strategy == "mixed" and time_slicing > 1:
        raise ConfigError(
            "timeSlicingReplicas", str(time_slicing), "1 when gpu-k8s:migStrategy is mixed (the plugin cannot share MIG devices)"
        )
    driver_version = parse_driver_version(cfg.get("driverVersion") or "")
    smoke_image = cfg.get("smokeTestImage") or None
    if smoke_image is not None and not IMAGE_REF_RE.match(smoke_image):
        raise ConfigError("smokeTestImage", smoke_image, "an image reference such as registry/repo/name:tag")
    _check_smoke_test(smoke_test, smoke_image, smoke_cuda, pools, driver_version)
    registry_mirrors = parse_registry_mirrors(_object(cfg, "registryMirrors", {}))
    _warn_unreachable_registries(region, registry_mirrors)
    _warn_unverified_driver(driver_version, pools)
    grid_url = cfg.get_secret("gridDriverUrl")
    return StackConfig(
        stack=pulumi.get_stack(),
        region=region,
        pools=pools,
        control_plane_instance_type=control_plane_type,
        image_name_regex=image_regex,
        system_disk_gib=parse_count("systemDiskGiB", cfg.get("systemDiskGiB") or "", minimum=20, maximum=500),
        public_bandwidth_mbps=parse_count("publicBandwidthMbps", cfg.get("publicBandwidthMbps") or "", maximum=100),
        allowed_cidrs=parse_cidrs(_object(cfg, "allowedCidrs", None)),
        ttl_hours=parse_ttl_hours(cfg.get("ttlHours") or ""),
        spot=spot,
        spot_price_limit=spot_price_limit,
        hourly_price_cny=parse_price("hourlyPriceCny", cfg.get("hourlyPriceCny") or ""),
        driver_version=driver_version,
        grid_driver_url=grid_url.apply(lambda u: u or "") if grid_url is not None else None,
        install_cuda_toolkit=_bool(cfg, "installCudaToolkit"),
        cuda_toolkit_version=_match(
            "cudaToolkitVersion", cfg.get("cudaToolkitVersion") or "", _CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 12.2"
        ),
        container_toolkit_version=parse_container_toolkit_version(cfg.get("containerToolkitVersion") or ""),
        install_docker=_bool(cfg, "installDocker"),
        registry_mirrors=registry_mirrors,
        kubernetes_version=parse_kubernetes_version(cfg.get("kubernetesVersion") or ""),
        kubernetes_mirror=resolve_kubernetes_mirror(cfg.get("kubernetesMirror") or "", region),
        pod_cidr=parse_pod_cidr(cfg.get("podCidr") or ""),
        flannel_version=_match("flannelVersion", cfg.get("flannelVersion") or "", _IMAGE_TAG_RE, "an image tag such as v0.26.7"),
        device_plugin_version=parse_device_plugin_version(cfg.get("devicePluginVersion") or ""),
        mig_strategy=mig_strategy,
        time_slicing_replicas=time_slicing,
        smoke_test=smoke_test,
        smoke_test_image=smoke_image,
        smoke_test_cuda_version=smoke_cuda,
    )


# Registries the cluster pulls from that are often unreachable from mainland China.
_FOREIGN_REGISTRIES = ("docker.io", "nvcr.io")


def _warn_unverified_driver(driver_version: str, pools: tuple[NodePool, ...]) -> None:
    if any(p.profile.driver == catalog.TESLA for p in pools) and not downloads.tesla_run_sha256(driver_version):
        pulumi.log.warn(
            f"gpu-k8s:driverVersion {driver_version}: download unverified: no published SHA-256 is known for "
            f"NVIDIA-Linux-x86_64-{driver_version}.run (components/downloads.py), so step 11 installs it unchecked"
        )


def _warn_unreachable_registries(region: str, mirrors: dict[str, str]) -> None:
    missing = [r for r in _FOREIGN_REGISTRIES if r not in mirrors]
    if region.startswith("cn-") and missing:
        pulumi.log.warn(
            f"{region} is in mainland China, where {' and '.join(missing)} are often unreachable; the flannel, "
            "device plugin and GPU test images come from them. If pulls fail, set gpu-k8s:registryMirrors (README)."
        )


def _check_control_plane_type(instance_type: str) -> None:
    accepted = "a non-GPU ECS instance type such as ecs.g7.large (GPU nodes go in gpu-k8s:nodePools)"
    if not re.match(r"^ecs\.[a-z0-9-]+\.[a-z0-9]+$", instance_type):
        raise ConfigError("controlPlaneInstanceType", instance_type, accepted)
    try:
        catalog.profile_for(instance_type)
    except catalog.UnknownInstanceType:
        return
    raise ConfigError("controlPlaneInstanceType", instance_type, accepted)


def _check_smoke_test(test: str, image: str | None, declared: str | None, pools: tuple[NodePool, ...], driver: str) -> None:
    """Refuse, at plan time, a test image the nodes' drivers cannot run (the seed's cuda>=12.3)."""
    drivers = [(cuda.node_driver(p.profile, driver), p.profile.driver) for p in pools if p.count]
    problem = cuda.smoke_test_error(test, image, declared, drivers)
    if problem:
        key, value = ("smokeTestImage", image) if image else ("smokeTest", test)
        accepted = "an image whose CUDA version the node drivers support (see the fix above)"
        raise ConfigError(key, value, accepted, reason=problem)


def _bool(cfg: pulumi.Config, key: str) -> bool:
    raw = cfg.get(key)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ConfigError(key, raw, "true or false")


def _object(cfg: pulumi.Config, key: str, default: object) -> object:
    raw = cfg.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        # A plain string (e.g. `pulumi config set allowedCidrs 1.2.3.4/32`) is one item.
        return raw
