"""NodeImageBake: bake a node image once per driver kind (gpu-k8s:nodeImage bake), boot later nodes from it.

Where the time goes on a stock node: the driver (a .run with a DKMS build), the container
runtime, the Kubernetes packages and the image pre-pull, downloaded and installed on every
node, every `make up`, scale-out and replacement. A baked image holds all of that; a node
booted from it runs the same steps, which find everything in place and only verify.

How (the alicloud provider's source, terraform-provider-alicloud resource_alicloud_image.go):
one throwaway builder instance per driver kind (never a cluster node: no kubeadm state to
clean) runs steps 00-30 and 25 (the node's own NodeBootstrap, kubeadm's images included), then
35-image-clean.sh, then ``alicloud.ecs.Image`` snapshots it (CreateImage from the instance; the
create waits for ``Usable``; 60 min timeout, a first snapshot is full). Not ECS Image Builder:
its pipeline would re-implement the node steps as build content, its execution resource returns
before the image exists (no id) and its GPU support is undocumented.

The bake runs after the cluster's GPU test (__main__.py): a builder that finds no stock, a
driver that fails or a cleaning that refuses fails that `up` at its end, with the cluster
already working; the next `up` bakes again.

Keys and names: ``bake_key`` digests what decides whether an image fits the stack (driver,
toolkit, runtime settings, Kubernetes, the scripts, the system disk size); the image's tags
record it and what the image holds (``bake_tags``). The builder and image resource names carry
the key: a new key is a new builder and a new image, never an update of the old ones (an
instance_id change is no new image to the provider: it is not ForceNew and Update ignores it).
The stack looks its key up (get_images, owner self) on every run. Found and Available: GPU
nodes created from now on boot from it, and the bake (builder, steps, Image with
``retain_on_delete``) leaves the program: the builder is deleted, the image kept, so it outlives
`make down` (the next `make up` boots from it) until ``make delete-images``. Found in another
status (Creating: another stack with the same key is baking): no second builder, nodes stay
stock. Not found: a bake is planned, and this run's nodes install as before. Running nodes keep
their disks: their image record (components/aliyun/node.py) prints a new image only for a new
instance.

Driver kinds (``bake_targets``): one Tesla image, built on the first compute pool's type, for
every compute family (the driver's kernel module does not depend on the GPU model; step 12
still checks each node's GPU); one GRID image per vGPU family, built on that family (the vGPU
profile and the plugin differ per family). No Aliyun page says whether a copy of a guest whose
GRID driver and licence the Cloud Assistant plugin installed may serve other instances of the
family, nor forbids it (AWS's EKS GPU AMI bakes a GRID module into a shared image). So a GRID
bake is marked undocumented in the plan, and every node still runs 11 (which reinstalls
through the plugin if the copied driver does not load) and 12 (which warns on an unlicensed
GPU): a copy that does not work is caught on its node.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal

import pulumi
import pulumi_alicloud as alicloud

from components import steps
from components.aliyun.auto_release import AutoRelease, AutoReleaseArgs
from components.aliyun.node import WORKER, Node, NodeArgs
from components.config import NodePool
from components.facts import catalog
from components.kubeadm.bootstrap import NodeBootstrap, NodeBootstrapArgs, NodeSetup

BAKED_STEPS = (
    "00-wait-boot.sh",
    "10-driver-prepare.sh",
    "11-nvidia-driver.sh",
    "12-gpu-verify.sh",
    "20-container-runtime.sh",
    "25-prefetch-images.sh",
    "30-kube-packages.sh",
    "35-image-clean.sh",
)
KEY_TAG = "gpu-k8s-bake-key"
# The builder's own auto-release: long enough for the steps and CreateImage (a release during
# the create would fail it), short enough that a forgotten builder stops billing.
# The steps' timeouts (11: 40 min, 20 and 30: 30 min, 25: 35 min, partly in parallel) and the
# image's 60 min create: 3 h covers the slow path; the bake normally takes about 15 minutes.
BUILDER_TTL_HOURS = Decimal("3")
IMAGE_CREATE_TIMEOUT = "60m"
# Snapshot storage: a custom image is billed as its snapshots' capacity ("镜像概述": 使用自定义
# 镜像时,涉及的费用为对应快照容量费用). Standard snapshots in mainland China: CNY 0.12 per
# GB-month (Aliyun's snapshot price table, as copied by third parties; the official billing
# page gives USD 0.0173/GB-month in Hangzhou as its example). Unverified against a dated list.
SNAPSHOT_CNY_PER_GB_MONTH = Decimal("0.12")
# Tags: at most 20 per resource, keys and values at most 128 characters, no acs:/aliyun
# prefix and no http(s):// (CreateImage API, Tag.N).
MAX_TAGS, MAX_TAG_LENGTH = 20, 128
# DescribeImages' statuses of an image still being made (Creating; Waiting: queued); any other
# status but Available (CreateFailed, UnAvailable, Deprecated) never becomes usable.
BAKING_STATUSES = ("Creating", "Waiting")
IMAGE_STATUSES = ("Available", *BAKING_STATUSES, "CreateFailed", "UnAvailable", "Deprecated")


def bake_targets(pools: tuple[NodePool, ...]) -> dict[str, NodePool]:
    """target -> the pool whose type builds it: the first pool with nodes of each target."""
    targets: dict[str, NodePool] = {}
    for pool in pools:
        if pool.count:
            targets.setdefault(catalog.bake_target(pool.profile), pool)
    return targets


def bake_key(
    target: str,
    setup: NodeSetup,
    system_disk_gib: int,
    grid_plugin: str = "",
    kubeadm_repository: str = "",
) -> str:
    """A digest of what decides whether the image fits this stack (pure): a change bakes a new one.

    Not the base image nor the pre-pulled list: a newer Ubuntu image from Aliyun, or another
    test image, leaves a baked node correct (it pulls what it lacks; tags record both). The
    system disk is in: a node's disk must be at least the image's size (ECS RunInstances).
    """
    tesla = target == catalog.TESLA
    facts = {
        "target": target,
        "disk": system_disk_gib,
        "driver": setup.driver_version if tesla else (setup.grid_driver_version or grid_plugin),
        "cudaToolkit": setup.cuda_toolkit_version if setup.install_cuda_toolkit else "",
        "containerToolkit": setup.container_toolkit_version,
        "mirror": setup.package_mirror,
        "registryMirrors": sorted(setup.registry_mirrors.items()),
        "docker": setup.install_docker,
        "isolation": setup.gpu_isolation,
        "kubernetes": setup.kubernetes_version,
        "kubeadmImages": kubeadm_repository,
        "scripts": {script: steps.script_hash(script) for script in BAKED_STEPS},
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def bake_tags(
    target: str,
    key: str,
    setup: NodeSetup,
    stack: str,
    profile: catalog.GpuProfile,
    base_image: str = "",
    images: tuple[str, ...] = (),
) -> dict[str, str]:
    """What the image records of itself (pure), within Aliyun's tag rules."""
    tesla = profile.driver == catalog.TESLA
    tags = {
        "managed-by": "gpu-k8s",
        "gpu-k8s-bake": "1",
        KEY_TAG: key,
        "gpu-k8s-bake-target": target,
        "gpu-k8s-baked-by-stack": stack,
        "gpu-k8s-driver-kind": profile.driver,
        "gpu-k8s-driver-version": setup.driver_version if tesla else setup.grid_driver_version or "plugin",
        "gpu-k8s-grid-plugin": profile.grid_plugin or "",
        "gpu-k8s-container-toolkit": setup.container_toolkit_version,
        "gpu-k8s-kubernetes": setup.kubernetes_version,
        "gpu-k8s-package-mirror": setup.package_mirror,
        "gpu-k8s-base-image": base_image,
        "gpu-k8s-images-sha256": hashlib.sha256(" ".join(sorted(images)).encode()).hexdigest()[:16],
    }
    check_tags(tags)
    return tags


def check_tags(tags: dict[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise ValueError(f"an image takes at most {MAX_TAGS} tags, not {len(tags)}")
    for key, value in tags.items():
        for text in (key, value):
            if len(text) > MAX_TAG_LENGTH or "http://" in text or "https://" in text:
                raise ValueError(f"image tag {key}={value}: at most {MAX_TAG_LENGTH} characters, no URL")
        if not key or key.startswith(("acs:", "aliyun")) or value.startswith("acs:"):
            raise ValueError(f"image tag {key}={value}: the key must not be empty or start with acs: or aliyun")


def find_baked_image(key: str) -> tuple[str | None, str]:
    """(id of this account's Available image baked with ``key``, or None; the status seen).

    Any status: an image still Creating (a bake under way, here or in another stack with the
    same key) must not start a second builder, whose CreateImage would fail on the name, and
    one that failed must be named. The provider's images data source asks for one status a call,
    ``Available`` unless told (data_source_alicloud_images.go: Default "Available",
    StringInSlice), so each status is asked in turn, Available first.
    """
    for status in IMAGE_STATUSES:
        found = alicloud.ecs.get_images(owners="self", tags={KEY_TAG: key}, status=status, most_recent=True)
        if found.images:
            return (found.images[0].id if status == "Available" else None), status
    return None, "none"


def storage_cost(system_disk_gib: int) -> dict:
    """The image's monthly snapshot storage, at most (a first snapshot holds the written blocks,
    at most the disk): the `cost` output's line."""
    most = SNAPSHOT_CNY_PER_GB_MONTH * system_disk_gib
    return {
        "item": "baked node image (snapshot storage, kept after `make down`; `make delete-images` removes it)",
        "monthly": f"at most {most.quantize(Decimal('0.01'))}",
        "source": f"estimate: CNY {SNAPSHOT_CNY_PER_GB_MONTH}/GB-month x the {system_disk_gib} GB system disk (snapshot "
        "capacity, usually the written part only; price from Aliyun's snapshot table as copied, unverified)",
    }


@dataclass(frozen=True, kw_only=True)
class NodeImageBakeArgs:
    stack: str
    target: str  # tesla | grid-<family> (bake_targets)
    key: str
    pool: NodePool  # its instance type builds the image
    hourly_price_cny: Decimal | None = None  # the builder's, for the cost output
    setup: NodeSetup
    images: tuple[str, ...]  # pre-pulled into the image
    kubeadm_image_repository: str = ""  # kubeadm's images pulled too: any node may be the control plane
    base_image_id: str  # the stock image the builder starts from
    vswitch_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    key_pair_name: pulumi.Input[str]
    private_key: pulumi.Input[str]
    system_disk_gib: int  # the smallest system disk any node gets: a node's disk must hold the image
    public_bandwidth_mbps: int
    ssh_rules: tuple[pulumi.Resource, ...] = ()

    def __post_init__(self):
        if catalog.bake_target(self.pool.profile) != self.target:
            raise ValueError(f"NodeImageBakeArgs.pool {self.pool.name} does not build a {self.target} image")

    @property
    def builder(self) -> str:
        """The builder's hostname and resource names: the key in it, so a new key is a new builder
        and a new image (never an update of the old ones), and the old bake leaves the program."""
        return f"bake-{self.target}-{self.key[:8]}"


class NodeImageBake(pulumi.ComponentResource):
    builder: Node
    image: alicloud.ecs.Image

    def __init__(self, name: str, args: NodeImageBakeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:bake:NodeImageBake", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        builder = args.builder
        release = AutoRelease(
            f"{name}-ttl",
            AutoReleaseArgs(ttl_hours=BUILDER_TTL_HOURS, hostnames=(builder,), replace_triggers=()),
            child,
        )
        self.builder = Node(
            builder,
            NodeArgs(
                hostname=builder,
                pool="bake",
                instance_type=args.pool.instance_type,
                profile=args.pool.profile,
                role=WORKER,
                image_id=args.base_image_id,
                vswitch_id=args.vswitch_id,
                security_group_id=args.security_group_id,
                key_pair_name=args.key_pair_name,
                system_disk_gib=args.system_disk_gib,
                public_bandwidth_mbps=args.public_bandwidth_mbps,
                auto_release_time=release.release_times[builder],
                tags={"gpu-k8s-bake-builder": args.key},
            ),
            child,
        )
        boot = NodeBootstrap(
            f"{builder}-bootstrap",
            NodeBootstrapArgs(
                hostname=builder,
                public_ip=self.builder.public_ip,
                instance_id=self.builder.instance.id,
                private_key=args.private_key,
                profile=args.pool.profile,
                setup=args.setup,
                after=args.ssh_rules,
                images=args.images,
                kubeadm_image_repository=args.kubeadm_image_repository,
            ),
            child,
        )
        done = boot.all_steps  # nothing may still be dialling in when 35 removes authorized_keys
        self.clean = steps.run_script(
            f"{builder}-image-clean",
            script="35-image-clean.sh",
            on=steps.host(self.builder.public_ip, args.private_key, self.builder.instance.id),
            after=done,
            parent=self,
            timeout="10m",
        )
        self.image = alicloud.ecs.Image(
            f"{name}-image",
            instance_id=self.builder.instance.id,
            # Unique in the region (Aliyun refuses a duplicate name): the key, and the stack that baked it.
            image_name=f"gpu-k8s-{args.target}-{args.key}-{args.stack}"[:128],
            image_family=f"gpu-k8s-{args.target}",
            description=f"gpu-k8s baked {args.target} node image (Kubernetes {args.setup.kubernetes_version}); "
            "contents in /etc/gpu-k8s/image.json",
            platform="Ubuntu",
            architecture="x86_64",
            detection_strategy="Standard",
            tags=bake_tags(args.target, args.key, args.setup, args.stack, args.pool.profile, args.base_image_id, args.images),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.clean],
                # Never deleted by Pulumi: it outlives `make down` and its own leaving the program
                # (module docstring); `make delete-images` deletes it and its snapshots.
                retain_on_delete=True,
                custom_timeouts=pulumi.CustomTimeouts(create=IMAGE_CREATE_TIMEOUT),
            ),
        )
        self.register_outputs({"imageId": self.image.id, "key": args.key, "target": args.target})
