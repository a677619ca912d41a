"""Fleet: every node of every pool, plus the optional dedicated control plane."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import pulumi
import pulumi_alicloud as alicloud

from components.aliyun.node import CONTROL_PLANE, WORKER, Node, NodeArgs
from components.config import ConfigError, NodePool
from components.facts.catalog import bake_target

CONTROL_PLANE_HOSTNAME = "control-plane"


@dataclass(frozen=True, kw_only=True)
class FleetArgs:
    pools: tuple[NodePool, ...]
    control_plane_instance_type: str | None
    image_id: str  # what a node created in this run boots from: gpu-k8s:imageId, else the newest match
    # Baked images GPU nodes created now boot from: "tesla" or "grid-<family>" -> id (kubeadm/bake.py).
    baked_images: Mapping[str, str] = field(default_factory=dict)
    vswitch_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    key_pair_name: pulumi.Input[str]
    system_disk_gib: int
    public_bandwidth_mbps: int
    auto_release_times: Mapping[str, pulumi.Input[str]]  # per hostname (AutoRelease); empty: off
    spot: bool
    spot_price_limit: Decimal | None

    def __post_init__(self):
        if sum(p.count for p in self.pools) < 1:
            raise ValueError("FleetArgs.pools must hold at least one node")
        # Never a node silently without auto-release: a time for every node, or none (off).
        expected = set(hostnames(self.pools, self.control_plane_instance_type))
        if self.auto_release_times and set(self.auto_release_times) != expected:
            raise ValueError(f"FleetArgs.auto_release_times must name every node {sorted(expected)}, or none")


def find_image(name_regex: str) -> str:
    """Newest system image whose name matches (e.g. Ubuntu 22.04 x64).

    Read on every run, so its answer changes when Aliyun publishes a newer image; it only
    reaches nodes created from now on (the instances ignore later image_id changes).
    """
    images = alicloud.ecs.get_images(name_regex=name_regex, owners="system", most_recent=True, os_type="linux")
    if not images.images:
        raise ConfigError("imageNameRegex", name_regex, "a regex matching an Aliyun system image in this region")
    return images.images[0].id


def hostnames(pools: tuple[NodePool, ...], control_plane_instance_type: str | None) -> list[str]:
    """Every node's hostname, the dedicated control plane first (what AutoRelease anchors)."""
    dedicated = control_plane_instance_type is not None
    return ([CONTROL_PLANE_HOSTNAME] if dedicated else []) + [h for h, _, _ in plan_nodes(pools, dedicated)]


def plan_nodes(pools: tuple[NodePool, ...], dedicated_control_plane: bool) -> list[tuple[str, NodePool, str]]:
    """(hostname, pool, role) for every GPU node; without a dedicated one, the first is the control plane."""
    planned = []
    for pool in pools:
        for hostname in pool.node_names():
            role = CONTROL_PLANE if not planned and not dedicated_control_plane else WORKER
            planned.append((hostname, pool, role))
    return planned


class Fleet(pulumi.ComponentResource):
    control_plane: Node
    gpu_nodes: list[Node]
    workers: list[Node]
    nodes: list[Node]

    def __init__(self, name: str, args: FleetArgs, opts: pulumi.ResourceOptions | None = None):
        self.new_node_image_id = args.image_id
        super().__init__("gpu-k8s:fleet:Fleet", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        common = dict(
            image_id=self.new_node_image_id,
            vswitch_id=args.vswitch_id,
            security_group_id=args.security_group_id,
            key_pair_name=args.key_pair_name,
            system_disk_gib=args.system_disk_gib,
            public_bandwidth_mbps=args.public_bandwidth_mbps,
            spot=args.spot,
            spot_price_limit=args.spot_price_limit,
        )
        dedicated = args.control_plane_instance_type is not None

        def image_for(pool: NodePool) -> dict:
            baked = args.baked_images.get(bake_target(pool.profile))
            return {**common, "image_id": baked} if baked else common

        self.gpu_nodes = [
            Node(
                hostname,
                NodeArgs(
                    hostname=hostname,
                    pool=pool.name,
                    instance_type=pool.instance_type,
                    profile=pool.profile,
                    role=role,
                    auto_release_time=args.auto_release_times.get(hostname),
                    **image_for(pool),
                ),
                child,
            )
            for hostname, pool, role in plan_nodes(args.pools, dedicated)
        ]
        if dedicated:
            self.control_plane = Node(
                CONTROL_PLANE_HOSTNAME,
                NodeArgs(
                    hostname=CONTROL_PLANE_HOSTNAME,
                    pool="control-plane",
                    instance_type=args.control_plane_instance_type,
                    profile=None,
                    role=CONTROL_PLANE,
                    auto_release_time=args.auto_release_times.get(CONTROL_PLANE_HOSTNAME),
                    **common,
                ),
                child,
            )
            self.nodes = [self.control_plane, *self.gpu_nodes]
        else:
            self.control_plane = self.gpu_nodes[0]
            self.nodes = list(self.gpu_nodes)
        self.workers = [n for n in self.nodes if n is not self.control_plane]
        self.register_outputs({"nodes": [n.hostname for n in self.nodes], "controlPlane": self.control_plane.hostname})

    def describe(self) -> dict:
        """Per-node facts for the `nodes` stack output."""
        return {
            n.hostname: {
                "pool": n.args.pool,
                "role": n.args.role,
                "instanceType": n.args.instance_type,
                "gpu": n.profile.summary() if n.profile else "none (dedicated control plane)",
                "driver": n.profile.driver if n.profile else "none",
                "publicIp": n.public_ip,
                "privateIp": n.private_ip,
                "ssh": n.ssh_command,
                "imageId": n.image_id,
                "autoReleaseTime": n.auto_release_time or "off",
            }
            for n in self.nodes
        }
