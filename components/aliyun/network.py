"""Network: VPC, one vSwitch in a zone that sells the GPU types, a locked-down security group.

The zone is chosen once (replacement-semantics.md §1.1, §1.5): ``get_zones`` answers
from live stock, and a vSwitch whose zone changes is replaced (ForceNew). So:

1. the zone of this stack's existing vSwitch (found by name and tags) is kept; otherwise
2. ``gpu-k8s:zoneId`` pins it (it must sell every type now); otherwise
3. the first zone where ``get_zones`` says every type sells, with an ESSD system disk,
   preferring one where DescribeAvailableResource says every type is ``WithStock`` (at
   deploy time with Aliyun keys and the SDK: components/aliyun/ecs_api.py, the same call as
   `make preflight`; offline, or if it fails, get_zones' first zone).

The `zoneChoice` output says in one line which rule chose the zone.

The vSwitch also ignores later ``zone_id`` changes, so the first zone stays in state
whatever the lookup says. Once a zone is known, a lookup that no longer lists it (a type
sold out) is a warning, not an error, so `make extend` and other day-2 runs still work;
on the first deploy it is a clear error.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud

from components.aliyun import ecs_api
from components.aliyun.node import SYSTEM_DISK_CATEGORY
from components.config import ConfigError
from components.config.aliyun import VPC_CIDR, zone_of_region
from components.facts import catalog

VSWITCH_CIDR = "10.0.0.0/20"
# Ports reachable from allowedCidrs only; everything else stays closed from outside.
PUBLIC_PORTS = {"ssh": 22, "kube-api": 6443}
# GPU families whose system disk may be ESSD (aliyun-gpu-ecs.md "System disk categories", Aliyun
# docs): gn7i/gn7e/vgn7i-vws/sgn7i-vws take only ESSD; gn6i/gn6v/vgn6i-vws also SSD and ultra.
ESSD_FAMILIES = frozenset({"gn7i", "gn7e", "vgn7i-vws", "sgn7i-vws", "gn6i", "gn6v", "vgn6i-vws"})
# Ask DescribeAvailableResource for stock when keys are present; the offline harness sets this False.
LIVE_STOCK_LOOKUP = True


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    region: str
    instance_types: tuple[str, ...]
    # Concrete CIDRs ("auto" already resolved) that reach SSH and the API; empty: no public
    # ports and no security group (ACK makes the nodes' group and the API's load balancer).
    allowed_cidrs: tuple[str, ...]
    stack: str  # tags the network, so a later run finds this stack's vSwitch and its zone
    spot: bool = False
    zone_id: str | None = None  # pinned (gpu-k8s:zoneId)

    def __post_init__(self):
        if not self.instance_types:
            raise ValueError("NetworkArgs.instance_types must name at least one instance type")
        for cidr in self.allowed_cidrs:
            ipaddress.ip_network(cidr, strict=True)
        if not self.stack:
            raise ValueError("NetworkArgs.stack is required (it tags the network)")
        if self.zone_id is not None and not zone_of_region(self.zone_id, self.region):
            raise ValueError(f"NetworkArgs.zone_id {self.zone_id!r} is not a zone of {self.region}")


def _ingress_rules(allowed_cidrs: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(role, port, cidr) for every public ingress rule, in a stable order."""
    return [(role, port, cidr) for role, port in PUBLIC_PORTS.items() for cidr in allowed_cidrs]


def _rule_suffix(cidr: str) -> str:
    return cidr.replace(".", "-").replace("/", "-")


def essd_supported(instance_type: str) -> bool | None:
    """True where the catalog knows the type takes an ESSD system disk; None where it does not know."""
    try:
        family = catalog.profile_for(instance_type).family
    except catalog.UnknownInstanceType:
        return None
    return True if family in ESSD_FAMILIES else None


def stack_tags(stack: str) -> dict[str, str]:
    return {"managed-by": "gpu-k8s", "gpu-k8s-stack": stack}


def sellable_zones(instance_types: tuple[str, ...], spot: bool) -> list[str]:
    """Zones where every type can be created now, with an ESSD system disk (alphabetical)."""
    common: list[str] | None = None
    for itype in instance_types:
        zones = alicloud.get_zones(
            available_instance_type=itype,
            available_resource_creation="VSwitch",
            available_disk_category=SYSTEM_DISK_CATEGORY,
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo" if spot else None,
        )
        ids = [z.id for z in zones.zones]
        common = ids if common is None else [z for z in common if z in ids]
    return common or []


def existing_zone(vswitch_name: str, stack: str) -> str | None:
    """The zone of this stack's vSwitch if it exists already (found by name and tags), else None."""
    found = alicloud.vpc.get_switches(vswitch_name=vswitch_name, tags=stack_tags(stack))
    zones = sorted({v.zone_id for v in found.vswitches or [] if v.zone_id})
    if not zones:
        # A stack created before the network was tagged: its vSwitch has the name but no
        # tags. Trust the name only when exactly one untagged vSwitch has it in the region.
        named = alicloud.vpc.get_switches(vswitch_name=vswitch_name)
        untagged = [v for v in named.vswitches or [] if v.zone_id and not (v.tags or {})]
        zones = [untagged[0].zone_id] if len(untagged) == 1 else []
    return zones[0] if zones else None


def stocked_zones(region: str, instance_types: tuple[str, ...], spot: bool) -> list[str] | None:
    """Zones with stock for every type, plenty first (DescribeAvailableResource), or None when not asked."""
    if not LIVE_STOCK_LOOKUP:
        return None
    try:
        creds = ecs_api.credentials_from_env()
        if creds is None:
            return None
        api = ecs_api.EcsApi(region, creds)
        reports = [ecs_api.TypeReport(t, 1, api.zones(t, spot), None, None) for t in instance_types]
    except ImportError:
        return None
    except Exception as err:  # noqa: BLE001 - a stock lookup never fails the run: get_zones decides
        pulumi.log.warn(f"zone: DescribeAvailableResource gave no answer ({' '.join(str(err).split())}); using get_zones")
        return None
    return ecs_api.common_zones(reports)


def zone_choice(zone: str, *, existing: str | None, pinned: str | None, sellable: list[str], stocked: list[str] | None) -> str:
    """One line: why the vSwitch is in ``zone``."""
    if existing is not None:
        return f"{zone}: this stack's vSwitch is there (the zone is chosen once and kept)"
    if pinned is not None:
        return f"{zone}: pinned by gpu-k8s:zoneId"
    if stocked and zone in stocked:
        return f"{zone}: every type has stock there (DescribeAvailableResource; get_zones lists {', '.join(sellable)})"
    how = "stock not checked offline (make preflight)" if stocked is None else "no zone has stock for every type"
    return f"{zone}: the first zone get_zones lists for every type ({', '.join(sellable)}); {how}"


def pick_zone(
    region: str,
    instance_types: tuple[str, ...],
    spot: bool,
    *,
    pinned: str | None = None,
    existing: str | None = None,
    stocked: list[str] | None = None,
    sellable: list[str] | None = None,
) -> str:
    """The zone of the vSwitch: the existing one, else the pinned one, else the first that sells every type
    (one with stock for every type first, when ``stocked`` is known)."""
    types = ", ".join(instance_types)
    sellable = sellable_zones(instance_types, spot) if sellable is None else sellable
    if existing is not None:
        if pinned is not None and pinned != existing:
            pulumi.log.warn(
                f"gpu-k8s:zoneId is {pinned}, but this stack's vSwitch is in {existing}: the zone is chosen once and "
                f"kept. To move the cluster, `make down`, then `make up` with zoneId {pinned}."
            )
        if existing not in sellable:
            pulumi.log.warn(
                f"zone {existing} does not currently sell every type ({types}) with a {SYSTEM_DISK_CATEGORY} disk: "
                "running nodes are unaffected, but a node created now may fail (sold out); retry later."
            )
        return existing
    if pinned is not None:
        if pinned not in sellable:
            raise ConfigError(
                "zoneId",
                pinned,
                f"a zone of {region} that sells {types} with a {SYSTEM_DISK_CATEGORY} system disk now "
                f"({', '.join(sellable) or 'none does'}), or empty",
            )
        return pinned
    if not sellable:
        raise ConfigError(
            "instanceType",
            types,
            f"instance types sold together in one zone of {region} with a {SYSTEM_DISK_CATEGORY} system disk "
            "(none found; try another region or type)",
        )
    return next((z for z in stocked or [] if z in sellable), sellable[0])


class Network(pulumi.ComponentResource):
    vpc: alicloud.vpc.Network
    vswitch: alicloud.vpc.Switch
    security_group: alicloud.ecs.SecurityGroup | None  # None without allowed CIDRs (ACK)
    zone_id: str

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        # Look the zone up first: no zone on a first deploy is a clear error before anything exists.
        for itype in args.instance_types:
            if essd_supported(itype) is None:
                pulumi.log.warn(
                    f"the catalog does not know whether {itype} takes a {SYSTEM_DISK_CATEGORY} system disk; "
                    f"the zone lookup (get_zones available_disk_category={SYSTEM_DISK_CATEGORY}) checks it at deploy time"
                )
        existing = existing_zone(f"{name}-vswitch", args.stack)
        stocked = None if existing or args.zone_id else stocked_zones(args.region, args.instance_types, args.spot)
        sellable = sellable_zones(args.instance_types, args.spot)
        self.zone_id = pick_zone(
            args.region,
            args.instance_types,
            args.spot,
            pinned=args.zone_id,
            existing=existing,
            stocked=stocked,
            sellable=sellable,
        )
        self.zone_choice = zone_choice(self.zone_id, existing=existing, pinned=args.zone_id, sellable=sellable, stocked=stocked)
        super().__init__("gpu-k8s:network:Network", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = stack_tags(args.stack)
        self.vpc = alicloud.vpc.Network(f"{name}-vpc", vpc_name=f"{name}-vpc", cidr_block=VPC_CIDR, tags=tags, opts=child)
        self.vswitch = alicloud.vpc.Switch(
            f"{name}-vswitch",
            vswitch_name=f"{name}-vswitch",
            vpc_id=self.vpc.id,
            cidr_block=VSWITCH_CIDR,
            zone_id=self.zone_id,
            tags=tags,
            # zone_id is ForceNew: never let a later lookup replace the vSwitch (and strand the nodes).
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["zone_id"]),
        )
        self.security_group, self.rules, self.ssh_rules, self.api_rules = None, [], [], []
        if args.allowed_cidrs:
            self._open_ports(name, args, child)
        self.register_outputs(
            {
                "vpcId": self.vpc.id,
                "vswitchId": self.vswitch.id,
                "securityGroupId": self.security_group.id if self.security_group else "none",
                "zoneId": self.zone_id,
                "zoneChoice": self.zone_choice,
            }
        )

    def _open_ports(self, name: str, args: NetworkArgs, child: pulumi.ResourceOptions) -> None:
        """The nodes' security group: SSH and the API from allowedCidrs only."""
        # inner_access_policy=Accept: nodes in the group reach each other on every port
        # (kubelet, flannel VXLAN, etcd); nothing else is open by default.
        self.security_group = alicloud.ecs.SecurityGroup(
            f"{name}-sg",
            security_group_name=f"{name}-sg",
            vpc_id=self.vpc.id,
            inner_access_policy="Accept",
            description="gpu-k8s: SSH and Kubernetes API from allowedCidrs only",
            opts=child,
        )
        self.rules = [
            alicloud.ecs.SecurityGroupRule(
                f"{name}-{role}-{_rule_suffix(cidr)}",
                type="ingress",
                ip_protocol="tcp",
                port_range=f"{port}/{port}",
                cidr_ip=cidr,
                nic_type="intranet",
                policy="accept",
                priority=1,
                security_group_id=self.security_group.id,
                description=f"gpu-k8s {role}",
                opts=child,
            )
            for role, port, cidr in _ingress_rules(args.allowed_cidrs)
        ]
        # What SSH steps and the Kubernetes provider must wait for.
        roles = [role for role, _, _ in _ingress_rules(args.allowed_cidrs)]
        self.ssh_rules = [rule for rule, role in zip(self.rules, roles, strict=True) if role == "ssh"]
        self.api_rules = [rule for rule, role in zip(self.rules, roles, strict=True) if role == "kube-api"]
