"""Aliyun keys: region, zone, instances and pools, image, disk, bandwidth, access, TTL and spot (pure checks)."""

from __future__ import annotations

import ipaddress
import re
from decimal import Decimal

import pulumi

from components.config.errors import ConfigError
from components.config.model import MAX_NODES, MAX_TTL_HOURS, MIN_TTL_HOURS, NodePool
from components.config.values import match_pattern, parse_count, parse_decimal, parse_price
from components.facts import catalog

_REGION_RE = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+$")


_POOL_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,14}[a-z0-9])?$")


# An ECS image id: a system image (ubuntu_22_04_x64_20G_alibase_20240130.vhd) or a custom one (m-bp1...).
_ECS_IMAGE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,127}$")


# components/aliyun/network.py's VPC (kept equal by a test; network.py imports this module).
VPC_CIDR = "10.0.0.0/16"


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


# The alicloud provider's credential keys: in a stack file (usually committed) only as secrets.
PROVIDER_SECRET_KEYS = ("accessKey", "secretKey", "securityToken")


def check_provider_credentials(is_secret: dict[str, bool]) -> None:
    """``is_secret``: credential key -> whether the stack holds it as a secret (keys that are set)."""
    for key, secret in is_secret.items():
        if not secret:
            raise ConfigError(
                f"alicloud:{key}",
                "[not shown]",
                f"`pulumi config set --secret alicloud:{key}` (a secure: value), or the ALICLOUD_ACCESS_KEY / "
                "ALICLOUD_SECRET_KEY environment variables",
                reason="it is stored in plain text in the stack file, where anyone who reads the file (or the repository) "
                "can spend on your account.",
            )


def in_mainland_china(region: str) -> bool:
    """Aliyun's cn-* regions, except Hong Kong (cn-hongkong), which reaches docker.io and nvcr.io."""
    return region.startswith("cn-") and region != "cn-hongkong"


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


def parse_ttl_hours(value: str) -> Decimal:
    accepted = f'0 (off) or a number of hours from {MIN_TTL_HOURS} to {MAX_TTL_HOURS} (3 years), e.g. "4" or "1.5"'
    hours = parse_decimal("ttlHours", value, accepted=accepted)
    if hours == 0:
        return Decimal(0)
    if hours < MIN_TTL_HOURS or hours > MAX_TTL_HOURS:
        raise ConfigError("ttlHours", value, accepted)
    return hours


def parse_pools(instance_type: str, node_count: object, node_pools: object, *, spot: bool) -> tuple[NodePool, ...]:
    if node_pools and instance_type:
        raise ConfigError(
            "nodePools",
            "(set together with gpu-k8s:instanceType)",
            "either nodePools or the instanceType/nodeCount shorthand, not both",
        )
    if node_pools and str(node_count) not in ("", "1"):
        raise ConfigError(
            "nodeCount",
            str(node_count),
            "1 (its default) with gpu-k8s:nodePools: each pool's count says how many nodes it has",
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


def parse_image_id(value: str) -> str | None:
    if not value:
        return None
    accepted = "an ECS image id such as ubuntu_22_04_x64_20G_alibase_20240130.vhd or m-bp1abc..., or empty (lookup)"
    match_pattern("imageId", value, _ECS_IMAGE_ID_RE, accepted)
    # A custom image (m-..., a baked one too) is the user's to vouch for; a public system
    # image is named after its OS, and the node scripts need apt (Ubuntu or Debian).
    if not value.startswith("m-") and not re.match(r"^(ubuntu|debian)_", value, re.IGNORECASE):
        raise ConfigError(
            "imageId",
            value,
            "an Ubuntu or Debian public image (ubuntu_22_04_x64_20G_alibase_...) or a custom image m-..., or empty",
            reason="the node scripts use apt; this public image is not Ubuntu or Debian.",
        )
    return value


def parse_zone_id(value: str, region: str) -> str | None:
    if not value:
        return None
    accepted = f"a zone of {region} such as {region}-h (or {region}a where the region ends in a digit), or empty"
    if not zone_of_region(value, region):
        raise ConfigError("zoneId", value, accepted)
    return value


def zone_of_region(zone: str, region: str) -> bool:
    """Aliyun zone ids are the region and a letter: cn-hangzhou-h, ap-southeast-1a, cn-shanghai-finance-1z."""
    return re.fullmatch(rf"{re.escape(region)}(?:-[a-z]{{1,2}}|(?<=\d)[a-z]{{1,2}})", zone) is not None


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


def check_control_plane_type(instance_type: str) -> None:
    accepted = "a non-GPU ECS instance type such as ecs.g7.large (GPU nodes go in gpu-k8s:nodePools)"
    if not re.match(r"^ecs\.[a-z0-9-]+\.[a-z0-9]+$", instance_type):
        raise ConfigError("controlPlaneInstanceType", instance_type, accepted)
    try:
        catalog.profile_for(instance_type)
    except catalog.UnknownInstanceType:
        return
    raise ConfigError("controlPlaneInstanceType", instance_type, accepted)


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


def check_spot_price_limit(limit: Decimal | None) -> None:
    if limit is not None and limit == 0:
        raise ConfigError(
            "spotPriceLimit",
            "0",
            "a price above 0 in CNY/h, or empty to pay the market price (SpotAsPriceGo)",
            reason="no spot instance is ever sold at 0.",
        )


def covers_all_addresses(cidrs: tuple[str, ...] | list[str]) -> bool:
    """True when the CIDRs together cover every IPv4 address (0.0.0.0/1 + 128.0.0.0/1 too)."""
    nets = [ipaddress.ip_network(c) for c in cidrs if c != "auto"]
    return list(ipaddress.collapse_addresses(nets)) == [ipaddress.ip_network("0.0.0.0/0")]


# Above this many addresses in all (a /8), allowedCidrs opens SSH and the API to a sizeable
# share of the internet; an office or VPN range is rarely larger than a /16.
WIDE_OPEN_ADDRESSES = 2**24
# Addresses the deployer's connections never come from (it reaches the nodes' public IPs from
# its own public address): loopback, private LANs, Aliyun's shared range, link-local.
_NEVER_A_SOURCE = tuple(
    ipaddress.ip_network(c)
    for c in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16")
)


def warn_world_open(cidrs: tuple[str, ...]) -> None:
    nets = [ipaddress.ip_network(c) for c in cidrs if c != "auto"]
    total = sum(n.num_addresses for n in ipaddress.collapse_addresses(nets))
    if covers_all_addresses(cidrs) and "0.0.0.0/0" not in cidrs:
        pulumi.log.warn(
            f"gpu-k8s:allowedCidrs {', '.join(cidrs)} together cover every address: SSH (22) and the Kubernetes API "
            "(6443) are open to the whole internet, as with 0.0.0.0/0."
        )
    elif total > WIDE_OPEN_ADDRESSES and "0.0.0.0/0" not in cidrs:
        share = total / 2**32
        pulumi.log.warn(
            f"gpu-k8s:allowedCidrs {', '.join(cidrs)} open SSH (22) and the Kubernetes API (6443) to {total:,} addresses "
            f'({share:.1%} of the internet, more than a /8); list your own public IP or office range, or "auto".'
        )
    unreachable = [str(n) for n in nets if any(n.subnet_of(p) for p in _NEVER_A_SOURCE)]
    if unreachable:
        pulumi.log.warn(
            f"gpu-k8s:allowedCidrs {', '.join(unreachable)}: loopback or private addresses; the deployer reaches the nodes' "
            'public IPs from its public address, so these never match it (use "auto" or your public IP/32).'
        )


def parse_spot_price_limit(raw: str, *, spot: bool) -> Decimal | None:
    limit = parse_price("spotPriceLimit", raw)
    if limit is not None and not spot:
        raise ConfigError("spotPriceLimit", str(limit), "no price limit unless gpu-k8s:spot is true")
    check_spot_price_limit(limit)
    return limit


def parse_control_plane_type(raw: str) -> str | None:
    """Empty (the first GPU node is the control plane) or a non-GPU type kubeadm can run on."""
    if not raw:
        return None
    check_control_plane_type(raw)
    check_control_plane_size(raw)
    return raw


def parse_image_name_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error:
        raise ConfigError("imageNameRegex", pattern, "a valid regular expression over image names") from None
    check_image_name_regex(pattern)
    return pattern
