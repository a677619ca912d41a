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
import textwrap
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path

import pulumi

from components.facts import ack as ack_support
from components.facts import catalog, cuda, downloads

PROJECT = "gpu-k8s"

MAX_NODES = 64
# ECS AutoReleaseTime must be at least 30 minutes and at most 3 years ahead
# (ModifyInstanceAutoReleaseTime API doc). Each node's time is anchored shortly before
# its RunInstances call, so the shortest TTL keeps a 15-minute margin above the API's
# 30 minutes for the resources created in between (VPC, vSwitch, key pair).
MIN_TTL_HOURS = Decimal("0.75")
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
_GPU_TEST_RUN_RE = re.compile(r"^[A-Za-z0-9.:-]{0,40}$")
# An ECS image id: a system image (ubuntu_22_04_x64_20G_alibase_20240130.vhd) or a custom one (m-bp1...).
_ECS_IMAGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,127}$")
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
        lines = [f"{_qualified(key)}: {shown!r} is not accepted; expected {accepted}"]
        if reason:
            # The why and the fix on lines of their own, so no line runs past ~200 characters.
            why, _, fix = reason.partition(" Fix: ")
            lines.append(f"why: {why.strip()}")
            if fix:
                lines.append(f"Fix: {fix.strip()}")
        super().__init__(wrap_lines(lines))


# Error lines are wrapped here; the plan prefixes ~30 characters ("gpu-k8s plan: config error: ").
MESSAGE_WIDTH = 170


def wrap_lines(lines: list[str], width: int = MESSAGE_WIDTH) -> str:
    """Each line wrapped at ``width``; continuation and detail lines indented by two spaces."""
    out: list[str] = []
    for i, line in enumerate(lines):
        indent = "" if i == 0 else "  "
        out += textwrap.wrap(
            line, width, initial_indent=indent, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
        )
    return "\n".join(out)


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
class AckSettings:
    """gpu-k8s:cluster ack: the managed cluster's settings (components/ack.py)."""

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
    smoke_test: str
    smoke_test_image: str | None
    smoke_test_cuda_version: str | None
    # GPU metrics (components/monitoring.py)
    monitoring: str  # dcgm | servicemonitor | none
    dcgm_exporter_version: str
    prometheus_version: str
    dcgm_counters: str | None  # a replacement counters CSV's text; None = NVIDIA's default
    image_id: str | None = None  # pinned ECS image (None: newest match of image_name_regex)
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
            "either nodePools or the instanceType/nodeCount shorthand, not both",
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


def parse_grid_driver_version(value: str) -> str:
    """Empty (Aliyun's GRID driver by family) or a GRID driver version the CUDA table knows."""
    if value == "":
        return value
    accepted = (
        f"empty (by family: {cuda.GRID_DRIVER_DEFAULT}, {cuda.GRID_DRIVER_BY_FAMILY['sgn8ia']} on sgn8ia) or a GRID "
        f"driver version of branch {min(cuda.BRANCH_MAX_CUDA)} or newer, e.g. 535.183.06"
    )
    try:
        cuda.driver_cuda(value)
    except ValueError:
        raise ConfigError("gridDriverVersion", value, accepted) from None
    return value


def device_plugin_version_ok(tag: str) -> bool:
    m = re.match(r"^v(\d+)\.(\d+)\.\d+$", tag)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= MIN_DEVICE_PLUGIN_VERSION


def parse_device_plugin_version(value: str) -> str:
    if not device_plugin_version_ok(value):
        raise ConfigError("devicePluginVersion", value, "an image tag v0.12.0 or newer, e.g. v0.20.0 or the seed's v0.14.3")
    return value


def parse_image_id(value: str) -> str | None:
    if not value:
        return None
    accepted = "an ECS image id such as ubuntu_22_04_x64_20G_alibase_20240130.vhd or m-bp1abc..., or empty (lookup)"
    return _match("imageId", value, _ECS_IMAGE_ID_RE, accepted)


def parse_zone_id(value: str, region: str) -> str | None:
    if not value:
        return None
    accepted = f"a zone of {region} such as {region}-h, or empty (chosen once by the zone lookup)"
    if not value.startswith(f"{region}-") or not re.match(r"^[a-z0-9-]+$", value):
        raise ConfigError("zoneId", value, accepted)
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
    check_spot_price_limit(spot_price_limit)
    pools = parse_pools(
        cfg.get("instanceType") or "",
        cfg.get("nodeCount") or "",
        _object(cfg, "nodePools", []),
        spot=spot,
    )
    cluster = _choice("cluster", cfg.get("cluster") or "", CLUSTER_BACKENDS)
    check_backend_keys(cluster, {key: cfg.get(key) for key in (*KUBEADM_ONLY_KEYS, *ACK_ONLY_KEYS)})
    ack = parse_ack(cfg, pools, region) if cluster == "ack" else None
    control_plane_type = cfg.get("controlPlaneInstanceType") or None
    if control_plane_type is not None:
        _check_control_plane_type(control_plane_type)
        check_control_plane_size(control_plane_type)
    smoke_test = _choice("smokeTest", cfg.get("smokeTest") or "", SMOKE_TESTS)
    smoke_cuda = cfg.get("smokeTestCudaVersion") or None
    if smoke_cuda is not None:
        _match("smokeTestCudaVersion", smoke_cuda, _CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 11.4 or 12.2")
    image_regex = cfg.get("imageNameRegex") or ""
    try:
        re.compile(image_regex)
    except re.error:
        raise ConfigError("imageNameRegex", image_regex, "a valid regular expression over image names") from None
    check_image_name_regex(image_regex)
    mig_strategy = _choice("migStrategy", cfg.get("migStrategy") or "", MIG_STRATEGIES)
    time_slicing = parse_count("timeSlicingReplicas", cfg.get("timeSlicingReplicas") or "", maximum=MAX_TIME_SLICING_REPLICAS)
    if mig_strategy == "mixed" and time_slicing > 1:
        raise ConfigError(
            "timeSlicingReplicas", str(time_slicing), "1 when gpu-k8s:migStrategy is mixed (the plugin cannot share MIG devices)"
        )
    driver_version = parse_driver_version(cfg.get("driverVersion") or "")
    grid_driver_version = parse_grid_driver_version(cfg.get("gridDriverVersion") or "")
    smoke_image = cfg.get("smokeTestImage") or None
    if smoke_image is not None and not IMAGE_REF_RE.match(smoke_image):
        raise ConfigError("smokeTestImage", smoke_image, "an image reference such as registry/repo/name:tag")
    # On ACK every node pool runs the driver ACK installs (compute families only: parse_ack).
    test_driver = ack.driver_version if ack else driver_version
    _check_smoke_test(smoke_test, smoke_image, smoke_cuda, pools, test_driver, grid_driver_version, ack=ack is not None)
    check_smoke_test_image_kind(smoke_test, smoke_image)
    registry_mirrors = parse_registry_mirrors(_object(cfg, "registryMirrors", {}))
    check_registry_mirror_urls(registry_mirrors)
    if ack is None:  # ACK pulls through its own node setup; registryMirrors is kubeadm-only
        _warn_unreachable_registries(region, registry_mirrors)
    check_grid_driver_url(cfg.get("gridDriverUrl"))
    if ack is None:
        _warn_unverified_driver(driver_version, pools)
    grid_url = cfg.get_secret("gridDriverUrl")
    loaded = StackConfig(
        stack=pulumi.get_stack(),
        region=region,
        pools=pools,
        control_plane_instance_type=control_plane_type,
        image_name_regex=image_regex,
        system_disk_gib=parse_count("systemDiskGiB", cfg.get("systemDiskGiB") or "", minimum=20, maximum=500),
        public_bandwidth_mbps=parse_count("publicBandwidthMbps", cfg.get("publicBandwidthMbps") or "", maximum=100),
        allowed_cidrs=parse_cidrs(_object(cfg, "allowedCidrs", None)) if ack is None else (),
        ttl_hours=parse_ttl_hours(cfg.get("ttlHours") or ""),
        spot=spot,
        spot_price_limit=spot_price_limit,
        hourly_price_cny=parse_price("hourlyPriceCny", cfg.get("hourlyPriceCny") or ""),
        driver_version=driver_version,
        grid_driver_version=grid_driver_version,
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
        pod_cidr=_checked_pod_cidr(cfg.get("podCidr") or "", ack=ack is not None),
        flannel_version=_match("flannelVersion", cfg.get("flannelVersion") or "", _IMAGE_TAG_RE, "an image tag such as v0.26.7"),
        device_plugin_version=parse_device_plugin_version(cfg.get("devicePluginVersion") or ""),
        mig_strategy=mig_strategy,
        time_slicing_replicas=time_slicing,
        smoke_test=smoke_test,
        smoke_test_image=smoke_image,
        smoke_test_cuda_version=smoke_cuda,
        **parse_monitoring(cfg),
        image_id=parse_image_id(cfg.get("imageId") or ""),
        zone_id=parse_zone_id(cfg.get("zoneId") or "", region),
        cluster=cluster,
        ack=ack,
        gpu_test_run=_match(
            "gpuTestRun", cfg.get("gpuTestRun") or "", _GPU_TEST_RUN_RE, "empty or up to 40 letters, digits, '.', ':', '-'"
        ),
    )
    _check_releases(loaded)
    warn_world_open(loaded.allowed_cidrs)
    return loaded


# --- gpu-k8s:cluster: kubeadm or ACK (components/backend.py) --------------------------

CLUSTER_BACKENDS = ("kubeadm", "ack")
# Keys only the kubeadm backend reads: on ACK the nodes come from ACK's GPU node image, with
# the driver, runtime, Kubernetes, pod network and device plugin that ACK installs.
KUBEADM_ONLY_KEYS = (
    "allowedCidrs",  # ACK's API server load balancer is ACK's: this program opens no port on ACK
    "controlPlaneInstanceType",
    "imageNameRegex",
    "imageId",
    "driverVersion",
    "gridDriverUrl",
    "gridDriverVersion",
    "installCudaToolkit",
    "cudaToolkitVersion",
    "containerToolkitVersion",
    "installDocker",
    "registryMirrors",
    "kubernetesVersion",
    "kubernetesMirror",
    "flannelVersion",
    "devicePluginVersion",
    "migStrategy",
    "timeSlicingReplicas",
)
ACK_ONLY_KEYS = ("ackClusterSpec", "ackKubernetesVersion", "ackNvidiaDriverVersion")
_PROJECT_FILE = Path(__file__).resolve().parents[2] / "Pulumi.yaml"


@cache
def project_config_declarations() -> dict[str, dict]:
    """Pulumi.yaml's config section (the only place defaults live), read once."""
    import yaml

    return dict((yaml.safe_load(_PROJECT_FILE.read_text()) or {}).get("config") or {})


def project_default(key: str) -> object:
    """The default Pulumi.yaml declares for a key (``default:``, or ``value:`` for untyped keys)."""
    decl = project_config_declarations().get(key)
    if not isinstance(decl, dict):
        return None
    return decl.get("default", decl.get("value"))


def _is_default(key: str, raw: str | None) -> bool:
    if raw is None:
        return True
    default = project_default(key)
    if isinstance(default, str):
        return raw == default
    try:
        return json.loads(raw) == default
    except json.JSONDecodeError:
        return str(default).lower() == raw.lower()


def check_backend_keys(cluster: str, values: dict[str, str | None]) -> None:
    """A key the chosen backend never reads is refused, not silently ignored."""
    other, why = (
        (ACK_ONLY_KEYS, "it applies to gpu-k8s:cluster ack only.")
        if cluster == "kubeadm"
        else (
            KUBEADM_ONLY_KEYS,
            "on ACK the nodes run ACK's GPU node image: ACK installs the driver (gpu-k8s:ackNvidiaDriverVersion), "
            "container runtime, Kubernetes (gpu-k8s:ackKubernetesVersion), pod network and device plugin.",
        )
    )
    for key in other:
        if not _is_default(key, values.get(key)):
            accepted = f"it unset (its default {json.dumps(project_default(key))}) with gpu-k8s:cluster {cluster}"
            raise ConfigError(key, values[key], accepted, reason=f"{why} Fix: remove it, or set gpu-k8s:cluster.")


def parse_ack(cfg: pulumi.Config, pools: tuple[NodePool, ...], region: str = "") -> AckSettings:
    """The ack* keys, and the node pools ACK can run (refused before anything is created)."""
    missing = ack_support.missing_deployer_tools() if ack_support.CHECK_DEPLOYER_TOOLS else []
    if missing:
        raise ConfigError(
            "cluster",
            "ack",
            "kubectl, GNU timeout, python3 and bash 4+ on this machine with gpu-k8s:cluster ack",
            reason=f"on ACK the GPU checks run kubectl here (no SSH to a node); missing: {', '.join(missing)}. "
            "Fix: install them (kubectl of the cluster's minor version), or use gpu-k8s:cluster kubeadm.",
        )
    spec = _choice("ackClusterSpec", cfg.get("ackClusterSpec") or "", tuple(ack_support.CLUSTER_SPECS))
    version = cfg.get("ackKubernetesVersion") or ""
    verdict = ack_support.check_kubernetes_version(version)
    if verdict:
        raise ConfigError("ackKubernetesVersion", version, ack_support.VERSION_ACCEPTED, reason=verdict)
    driver = cfg.get("ackNvidiaDriverVersion") or ""
    if driver not in ack_support.DRIVER_VERSIONS:
        raise ConfigError(
            "ackNvidiaDriverVersion",
            driver,
            f"a driver ACK offers: {', '.join(ack_support.DRIVER_VERSIONS)}",
            reason=f"ACK installs its default instead of a version it does not list, silently ({ack_support.FACTS_DATE}).",
        )
    try:
        ttl: Decimal | None = parse_ttl_hours(cfg.get("ttlHours") or "")
    except ConfigError:
        ttl = None  # not a number, or outside kubeadm's range: say ACK's range
    if ttl is None or (ttl != 0 and not ack_support.MIN_TTL_HOURS <= ttl <= ack_support.MAX_TTL_HOURS):
        raise ConfigError(
            "ttlHours",
            cfg.get("ttlHours") or "",
            f"0 (off) or {ack_support.MIN_TTL_HOURS} to {ack_support.MAX_TTL_HOURS} hours with gpu-k8s:cluster ack",
            reason="on ACK the TTL is an ESS scheduled task, made after the cluster (about 15 min) and the node pools; "
            "it must start in the future and at most 90 days after it is made.",
        )
    if region.startswith("cn-"):
        pulumi.log.warn(
            f"{region} is in mainland China, where nvcr.io and docker.io are often unreachable: on ACK the GPU test image "
            "(gpu-k8s:smokeTestImage: e.g. a copy in your ACR) and, with gpu-k8s:monitoring, dcgm-exporter and Prometheus "
            "come from them (gpu-k8s:registryMirrors is kubeadm-only). If pulls fail, use an ACR copy or monitoring none."
        )
    for pool in pools:
        problem = ack_support.pool_problem(pool.profile, driver)
        if problem:
            key = "nodePools" if cfg.get("nodePools") not in (None, "", "[]") else "instanceType"
            raise ConfigError(key, pool.instance_type, ack_support.FAMILIES_ACCEPTED, reason=problem)
    return AckSettings(
        cluster_spec=spec,
        kubernetes_version=version,
        driver_version=driver,
    )


# --- GPU metrics (components/monitoring.py owns the known releases) --------------------


def parse_monitoring(cfg: pulumi.Config) -> dict:
    """gpu-k8s:monitoring and its versions; a replacement counters CSV is read and checked here."""
    from components.facts import dcgm

    mode = _choice("monitoring", cfg.get("monitoring") or "", dcgm.MODES)
    exporter = cfg.get("dcgmExporterVersion") or ""
    if not dcgm.exporter_version_ok(exporter):
        newest = ", ".join(list(dcgm.KNOWN_EXPORTER_RELEASES)[:3])
        raise ConfigError("dcgmExporterVersion", exporter, f"a known dcgm-exporter release <DCGM>-<exporter>, e.g. {newest}")
    prometheus = cfg.get("prometheusVersion") or ""
    if not dcgm.prometheus_version_ok(prometheus):
        raise ConfigError("prometheusVersion", prometheus, "a prom/prometheus tag v3.x.y or newer, e.g. v3.14.0")
    counters = None
    path = cfg.get("dcgmCountersCsv") or ""
    if path:
        file = Path(__file__).resolve().parents[2] / path
        try:
            counters = file.read_text()
        except (OSError, UnicodeDecodeError):
            raise ConfigError("dcgmCountersCsv", path, "a readable CSV file, relative to the project directory") from None
        problem = dcgm.counters_error(counters)
        if problem:
            accepted = "a dcgm-exporter counters CSV (see components/facts/dcgm/default-counters.csv)"
            raise ConfigError("dcgmCountersCsv", path, accepted, reason=f"{problem}.")
    return {"monitoring": mode, "dcgm_exporter_version": exporter, "prometheus_version": prometheus, "dcgm_counters": counters}


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


def _check_smoke_test(
    test: str,
    image: str | None,
    declared: str | None,
    pools: tuple[NodePool, ...],
    driver: str,
    grid_driver: str = "",
    *,
    ack: bool = False,
) -> None:
    """Refuse, at plan time, a test image the nodes' drivers cannot run (the seed's cuda>=12.3)."""
    drivers = [(cuda.node_driver(p.profile, driver, grid_driver), p.profile.driver) for p in pools if p.count]
    problem = cuda.smoke_test_error(test, image, declared, drivers)
    if problem and ack:
        problem = problem.replace("gpu-k8s:driverVersion", "gpu-k8s:ackNvidiaDriverVersion")
        problem += f" ACK offers: {', '.join(ack_support.DRIVER_VERSIONS)}."
    if problem:
        key, value = ("smokeTestImage", image) if image else ("smokeTest", test)
        if declared is not None and "smokeTestCudaVersion" in problem:
            key, value = "smokeTestCudaVersion", declared  # the declared CUDA is what is wrong
            raise ConfigError(key, value, "the CUDA version of gpu-k8s:smokeTestImage, or empty", reason=problem)
        accepted = "an image whose CUDA version the node drivers support (see Fix)"
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
        # A plain string (e.g. `pulumi config set allowedCidrs 203.0.113.4/32`) is one item.
        return raw


# --- inputs that pass the format checks but fail after billing (issue 11) -------------
# Each check is its own function, called from load_config; warnings go to pulumi.log.

# components/network.py's VPC (kept equal by a test; network.py imports this module).
VPC_CIDR = "10.0.0.0/16"
# kubeadm's default serviceSubnet (ClusterConfiguration networking.serviceSubnet, kubeadm
# v1beta3/v1beta4 API docs: "defaults to 10.96.0.0/12"); 40-kubeadm-init.sh keeps it.
SERVICE_CIDR = "10.96.0.0/12"
# The offline plan cannot decrypt a `secure:` stack value and passes this marker instead
# (tools/harness.py effective_config); the deployed stack gets the real value.
OFFLINE_SECRET_MARKER = "<secret from stack file>"
# A mirror URL: scheme, host[:port], optional path. No shell or list separators, quotes
# or spaces: it is written into hosts.toml by a shell script.
_SAFE_MIRROR_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_SAFE_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?/[A-Za-z0-9._~/%+=&?:@-]*$")
# Aliyun system image names of distributions the apt-based node scripts cannot run
# (Aliyun public image names, e.g. centos_7_9_x64_20G_alibase_20240628.vhd).
NON_APT_IMAGE_SAMPLES = (
    "centos_7_9_x64_20G_alibase_20240628.vhd",
    "centos_stream_9_x64_20G_alibase_20240628.vhd",
    "aliyun_3_x64_20G_alibase_20240628.vhd",
    "aliyun_2_1903_x64_20G_alibase_20240628.vhd",
    "anolisos_8_9_x64_20G_rhck_alibase_20240628.vhd",
    "rhel_9_4_x64_20G_alibase_20240628.vhd",
    "rockylinux_9_4_x64_20G_alibase_20240628.vhd",
    "almalinux_9_4_x64_20G_alibase_20240628.vhd",
    "fedora_40_x64_20G_alibase_20240628.vhd",
    "opensuse_15_6_x64_20G_alibase_20240628.vhd",
    "suse_15_sp6_x64_20G_alibase_20240628.vhd",
    "freebsd_13_3_x64_30G_alibase_20240628.vhd",
    "win2022_21H2_x64_dtc_en-us_40G_alibase_20240628.vhd",
)
APT_IMAGE_SAMPLES = (
    "ubuntu_22_04_x64_20G_alibase_20240628.vhd",
    "ubuntu_24_04_x64_20G_alibase_20240628.vhd",
    "ubuntu_20_04_x64_20G_alibase_20240628.vhd",
    "debian_12_6_x64_20G_alibase_20240628.vhd",
)
# kubeadm's preflight needs at least 2 CPUs and 1700 MB of memory on a control plane
# (kubeadm init preflight checks NumCPU and Mem).
MIN_CONTROL_PLANE_VCPUS, MIN_CONTROL_PLANE_MEMORY_GIB = 2, 1.7


def check_pod_cidr_overlaps(pod_cidr: str, service_cidr: str = SERVICE_CIDR) -> None:
    """Pods must not share addresses with the VPC (node IPs) or the Service range."""
    net = ipaddress.ip_network(pod_cidr)
    for what, other in (("the VPC/vSwitch", VPC_CIDR), ("the Kubernetes Service range", service_cidr)):
        if net.overlaps(ipaddress.ip_network(other)):
            raise ConfigError(
                "podCidr",
                pod_cidr,
                f"a CIDR outside {VPC_CIDR} and {service_cidr}, e.g. 10.244.0.0/16",
                reason=f"it overlaps {what} {other}.",
            )


def check_grid_driver_url(raw: str | None) -> None:
    """gridDriverUrl: https, a URL, nothing a shell would split. The value is never shown."""
    if not raw or raw == OFFLINE_SECRET_MARKER:
        return
    if not raw.startswith("https://"):
        problem = f"scheme {raw.split(':', 1)[0][:10]!r} is not https" if ":" in raw else "it is not a URL"
    elif not _SAFE_URL_RE.match(raw):
        problem = "it is not host/path, or it holds a space, quote or shell character"
    else:
        return
    raise ConfigError(
        "gridDriverUrl",
        "[secret]",
        "an https:// URL of a GRID .run installer, without spaces or quotes",
        reason=f"{problem}.",
    )


def check_registry_mirror_urls(mirrors: dict[str, str]) -> None:
    for registry, url in mirrors.items():
        if not _SAFE_MIRROR_URL_RE.match(url):
            raise ConfigError(
                f"registryMirrors.{registry}",
                url,
                "an http(s) URL of letters, digits, '.', '-', ':' port and '/' path only",
                reason="it contains a shell or list separator, quote or space.",
            )


def check_spot_price_limit(limit: Decimal | None) -> None:
    if limit is not None and limit == 0:
        raise ConfigError(
            "spotPriceLimit",
            "0",
            "a price above 0 in CNY/h, or empty to pay the market price (SpotAsPriceGo)",
            reason="no spot instance is ever sold at 0.",
        )


def check_image_name_regex(pattern: str) -> None:
    """The node scripts use apt: the image must be Ubuntu (or Debian)."""
    accepted = "a regex over Ubuntu image names, e.g. ^ubuntu_22_04_x64_20G_alibase_"
    if not pattern.strip():
        raise ConfigError("imageNameRegex", pattern, accepted, reason="an empty regex matches any image, e.g. CentOS.")
    compiled = re.compile(pattern)
    wrong = [s for s in NON_APT_IMAGE_SAMPLES if compiled.search(s)]
    if wrong:
        raise ConfigError(
            "imageNameRegex", pattern, accepted, reason=f"it matches {wrong[0]}, which has no apt for the node scripts."
        )
    if not re.search(r"ubuntu|debian", pattern, re.IGNORECASE) and not any(compiled.search(s) for s in APT_IMAGE_SAMPLES):
        raise ConfigError("imageNameRegex", pattern, accepted, reason="it names no Ubuntu or Debian image.")


def check_control_plane_size(instance_type: str) -> None:
    """kubeadm refuses a control plane with < 2 vCPU or < 1.7 GiB; unknown sizes are warned."""
    vcpus, memory = catalog.non_gpu_size(instance_type)
    if vcpus is None or memory is None:
        pulumi.log.warn(
            f"gpu-k8s:controlPlaneInstanceType {instance_type}: its vCPU and memory are not in the catalog; kubeadm needs "
            f">= {MIN_CONTROL_PLANE_VCPUS} vCPU and >= {MIN_CONTROL_PLANE_MEMORY_GIB} GiB (ecs.g7.large has 2 and 8)."
        )
        return
    if vcpus < MIN_CONTROL_PLANE_VCPUS or memory < MIN_CONTROL_PLANE_MEMORY_GIB:
        raise ConfigError(
            "controlPlaneInstanceType",
            instance_type,
            f"a type with >= {MIN_CONTROL_PLANE_VCPUS} vCPU and >= {MIN_CONTROL_PLANE_MEMORY_GIB} GiB, e.g. ecs.g7.large",
            reason=f"it has {vcpus} vCPU and {memory:g} GiB; kubeadm's preflight refuses that.",
        )


def covers_all_addresses(cidrs: tuple[str, ...] | list[str]) -> bool:
    """True when the CIDRs together cover every IPv4 address (0.0.0.0/1 + 128.0.0.0/1 too)."""
    nets = [ipaddress.ip_network(c) for c in cidrs if c != "auto"]
    return list(ipaddress.collapse_addresses(nets)) == [ipaddress.ip_network("0.0.0.0/0")]


def warn_world_open(cidrs: tuple[str, ...]) -> None:
    if covers_all_addresses(cidrs) and "0.0.0.0/0" not in cidrs:
        pulumi.log.warn(
            f"gpu-k8s:allowedCidrs {', '.join(cidrs)} together cover every address: SSH (22) and the Kubernetes API "
            "(6443) are open to the whole internet, as with 0.0.0.0/0."
        )


def check_release(key: str, version: str) -> None:
    """A version that was never released is refused; one newer than the table is warned."""
    from components.facts import releases

    component = next(c for c in releases.COMPONENTS if c.key == key)
    verdict = releases.check(component, version)
    if verdict.status == "unknown":
        newest = ", ".join(component.newest())
        raise ConfigError(key, version, f"a released version, e.g. {newest}", reason=verdict.message + ".")
    if verdict.status == "newer":
        pulumi.log.warn(verdict.message)


# What each test's pod runs: vectoradd uses the image's own entrypoint (CUDA sample
# vectorAdd prints "Test PASSED"); tensorflow runs the seed's script with python3 + TF.
def check_smoke_test_image_kind(test: str, image: str | None) -> None:
    if image is None or test == "none":
        return
    name = image.rsplit("/", 1)[-1]
    if test == "vectoradd" and "vectoradd" not in name:
        raise ConfigError(
            "smokeTestImage",
            image,
            "a CUDA vectoradd sample image (its name contains 'vectoradd'), or gpu-k8s:smokeTest tensorflow",
            reason="the vectoradd test runs the image's entrypoint and passes only if it prints 'Test PASSED'.",
        )
    if test == "tensorflow" and "tensorflow" not in image:
        raise ConfigError(
            "smokeTestImage",
            image,
            "a TensorFlow GPU image (its name contains 'tensorflow'), or gpu-k8s:smokeTest vectoradd",
            reason="the tensorflow test runs 'python3 /app/test.py', which imports TensorFlow.",
        )


def _checked_pod_cidr(value: str, *, ack: bool = False) -> str:
    cidr = parse_pod_cidr(value)
    check_pod_cidr_overlaps(cidr, service_cidr=ack_support.SERVICE_CIDR if ack else SERVICE_CIDR)
    return cidr


def _check_releases(loaded: StackConfig) -> None:
    """Every pinned version (already format-checked) against components/releases.py."""
    check_release("kubernetesVersion", loaded.kubernetes_version)
    check_release("flannelVersion", loaded.flannel_version)
    check_release("devicePluginVersion", loaded.device_plugin_version)
    check_release("containerToolkitVersion", loaded.container_toolkit_version)
    check_release("driverVersion", loaded.driver_version)
    if loaded.install_cuda_toolkit:
        check_release("cudaToolkitVersion", loaded.cuda_toolkit_version)
