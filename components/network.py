"""Network: VPC, one vSwitch in a zone that sells the GPU types, a locked-down security group."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_alicloud as alicloud

from components.config import ConfigError

VPC_CIDR = "10.0.0.0/16"
VSWITCH_CIDR = "10.0.0.0/20"
# Ports reachable from allowedCidrs only; everything else stays closed from outside.
PUBLIC_PORTS = {"ssh": 22, "kube-api": 6443}


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    region: str
    instance_types: tuple[str, ...]
    allowed_cidrs: tuple[str, ...]  # concrete CIDRs ("auto" already resolved)
    spot: bool = False

    def __post_init__(self):
        if not self.instance_types:
            raise ValueError("NetworkArgs.instance_types must name at least one instance type")
        for cidr in self.allowed_cidrs:
            ipaddress.ip_network(cidr, strict=True)
        if not self.allowed_cidrs:
            raise ValueError("NetworkArgs.allowed_cidrs must not be empty")


def _ingress_rules(allowed_cidrs: tuple[str, ...]) -> list[tuple[str, int, str]]:
    """(role, port, cidr) for every public ingress rule, in a stable order."""
    return [(role, port, cidr) for role, port in PUBLIC_PORTS.items() for cidr in allowed_cidrs]


def _rule_suffix(cidr: str) -> str:
    return cidr.replace(".", "-").replace("/", "-")


def pick_zone(region: str, instance_types: tuple[str, ...], spot: bool) -> str:
    """A zone where every instance type can be created with a vSwitch (first match)."""
    common: list[str] | None = None
    for itype in instance_types:
        zones = alicloud.get_zones(
            available_instance_type=itype,
            available_resource_creation="VSwitch",
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo" if spot else None,
        )
        ids = [z.id for z in zones.zones]
        common = ids if common is None else [z for z in common if z in ids]
    if not common:
        raise ConfigError(
            "instanceType",
            ", ".join(instance_types),
            f"instance types sold together in one zone of {region} (none found; try another region or type)",
        )
    return common[0]


class Network(pulumi.ComponentResource):
    vpc: alicloud.vpc.Network
    vswitch: alicloud.vpc.Switch
    security_group: alicloud.ecs.SecurityGroup
    zone_id: str

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        # Look the zone up first: no zone means a clear error before anything exists.
        self.zone_id = pick_zone(args.region, args.instance_types, args.spot)
        super().__init__("gpu-k8s:network:Network", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.vpc = alicloud.vpc.Network(f"{name}-vpc", vpc_name=f"{name}-vpc", cidr_block=VPC_CIDR, opts=child)
        self.vswitch = alicloud.vpc.Switch(
            f"{name}-vswitch",
            vswitch_name=f"{name}-vswitch",
            vpc_id=self.vpc.id,
            cidr_block=VSWITCH_CIDR,
            zone_id=self.zone_id,
            opts=child,
        )
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
        self.register_outputs(
            {
                "vpcId": self.vpc.id,
                "vswitchId": self.vswitch.id,
                "securityGroupId": self.security_group.id,
                "zoneId": self.zone_id,
            }
        )
