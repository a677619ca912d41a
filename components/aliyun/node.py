"""Node: one pay-as-you-go ECS instance (a GPU node, or a dedicated control plane).

Day 2 (replacement-semantics.md §1.2): on alicloud_instance a changed ``image_id`` is an
in-place stop, ReplaceSystemDisk, start that wipes the node while Pulumi reports
success. The image is therefore chosen once per node and kept in a per-node record,
``<hostname>-image`` (a local command that prints it): a newer image, or a new ``imageId``,
only reaches nodes created later, or a node replaced on purpose with
``make replace-node NODE=<hostname>``, which replaces the record with the instance.

Why not ``ignore_changes=["image_id"]`` on the instance: the engine puts the ignored old
value into the inputs whenever the resource has a previous state, a replacement included
(pulumi step_generator.go, processIgnoreChanges; reference §5), so a replaced node came back
on its old image (and failed if that public image had been retired). The same holds for
an ignored ``create`` on the record, so the record does not use ``ignore_changes`` either:
``components/scripts/local/image-record.sh`` runs again on an update (a newer image) and prints
the image it printed before (``PULUMI_COMMAND_STDOUT``, set by pulumi-command on an update), so
a changed image updates the record without changing its stdout. It prints the image chosen now
when the record is created (a new node, `make replace-node`), and when the instance's ForceNew
inputs changed since its last run (``FOR_INSTANCE``, kept on its stderr): toggling ``spot`` or
changing ``spotPriceLimit`` replaces the instance, which must not ask for an image Aliyun has
retired since.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pulumi
import pulumi_alicloud as alicloud
import pulumi_command as command

from components import steps
from components.config import DNS_LABEL_RE
from components.facts.catalog import GpuProfile

CONTROL_PLANE, WORKER = "control-plane", "worker"
SYSTEM_DISK_CATEGORY = "cloud_essd"  # ForceNew on the instance; the zone lookup checks every type takes it
IMAGE_RECORD_SCRIPT = "local/image-record.sh"  # under components/scripts/, run in the project directory


@dataclass(frozen=True, kw_only=True)
class NodeArgs:
    hostname: str  # also the Kubernetes node name
    pool: str
    instance_type: str
    profile: GpuProfile | None  # None: a non-GPU dedicated control plane
    role: str
    image_id: str  # the image a node created now gets (pin or lookup); a running node keeps its own
    vswitch_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    key_pair_name: pulumi.Input[str]
    system_disk_gib: int
    public_bandwidth_mbps: int
    auto_release_time: pulumi.Input[str] | None = None  # from this node's own anchor (auto_release.py)
    spot: bool = False
    spot_price_limit: Decimal | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not DNS_LABEL_RE.match(self.hostname):
            raise ValueError(f"NodeArgs.hostname {self.hostname!r} is not a DNS label")
        if self.role not in (CONTROL_PLANE, WORKER):
            raise ValueError(f"NodeArgs.role must be {CONTROL_PLANE} or {WORKER}")
        if self.spot_price_limit is not None and not self.spot:
            raise ValueError("NodeArgs.spot_price_limit needs spot=True")


def spot_strategy(spot: bool, limit: Decimal | None) -> str:
    if not spot:
        return "NoSpot"
    return "SpotWithPriceLimit" if limit is not None else "SpotAsPriceGo"


def replacing_inputs(spot: bool, limit: Decimal | None) -> tuple[str, ...]:
    """The instance inputs this program sets that are ForceNew (§1.2): a change replaces the instance."""
    return (spot_strategy(spot, limit), str(limit) if limit is not None else "", SYSTEM_DISK_CATEGORY)


def instance_identity(spot: bool, limit: Decimal | None) -> str:
    """The ForceNew inputs exactly as the instance receives them (the price limit as the float it
    gets): the image record's FOR_INSTANCE. It changes only when the engine replaces the instance,
    so 1.8 -> 1.80 (the same float) never makes the record print a new image for a running node."""
    price = repr(float(limit)) if limit is not None else ""
    return ",".join((spot_strategy(spot, limit), price, SYSTEM_DISK_CATEGORY))


class Node(pulumi.ComponentResource):
    instance: alicloud.ecs.Instance
    public_ip: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    ssh_command: pulumi.Output[str]

    def __init__(self, name: str, args: NodeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:node:Node", name, {}, opts)
        self.args = args
        self.hostname = args.hostname
        self.profile = args.profile
        strategy = spot_strategy(args.spot, args.spot_price_limit)
        limit = float(args.spot_price_limit) if args.spot_price_limit is not None else None
        self.auto_release_time = args.auto_release_time
        # The image this node runs: chosen when the record is created (see the module docstring).
        record_env = {"IMAGE": args.image_id, "FOR_INSTANCE": instance_identity(args.spot, args.spot_price_limit)}
        self.image_record = command.local.Command(
            f"{name}-image",
            create=steps.local_script_command(IMAGE_RECORD_SCRIPT, record_env),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.instance = alicloud.ecs.Instance(
            f"{name}-instance",
            instance_name=f"gpu-k8s-{args.hostname}",
            host_name=args.hostname,
            instance_type=args.instance_type,
            image_id=self.image_record.stdout,
            vswitch_id=args.vswitch_id,
            security_groups=[args.security_group_id],
            key_name=args.key_pair_name,  # key only: no password is ever set
            instance_charge_type="PostPaid",
            spot_strategy=strategy,
            spot_price_limit=limit,
            auto_release_time=self.auto_release_time,
            system_disk_category=SYSTEM_DISK_CATEGORY,
            system_disk_size=args.system_disk_gib,
            # PayByTraffic: outbound bytes only; the public IP goes with the instance.
            internet_charge_type="PayByTraffic",
            internet_max_bandwidth_out=args.public_bandwidth_mbps,
            deletion_protection=False,
            tags={"managed-by": "gpu-k8s", "gpu-k8s-pool": args.pool, "gpu-k8s-role": args.role, **args.tags},
            # Delete before replace: the new instance joins Kubernetes under the same node name, and
            # kubeadm join refuses while a Ready Node of that name exists, i.e. while the old instance
            # runs (kubernetes cmd/kubeadm/app/cmd/phases/join/kubelet.go: "a Node with name %q and
            # status Ready already exists"). The new one is Ready to join minutes later (boot, driver).
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        self.image_id = self.instance.image_id  # the image in state: what this node runs
        self.public_ip = self.instance.public_ip
        self.private_ip = self.instance.private_ip
        self.ssh_command = self.public_ip.apply(lambda ip: f"ssh -i gpu-k8s.pem -o StrictHostKeyChecking=accept-new root@{ip}")
        self.register_outputs(
            {
                "publicIp": self.public_ip,
                "privateIp": self.private_ip,
                "ssh": self.ssh_command,
                "imageId": self.image_id,
                "autoReleaseTime": self.auto_release_time or "off",
                "gpu": args.profile.summary() if args.profile else "none (control plane)",
            }
        )
