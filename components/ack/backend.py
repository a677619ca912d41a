"""AckCluster: the ACK backend — a managed control plane and one GPU node pool per pool.

gpu-k8s:cluster ack (components/backend.py). In the stack's VPC and vSwitch:

    control-plane (cs.ManagedKubernetes, flannel addon) ─┬─> <pool>-pool (cs.NodePool, per pool, parallel)
                                                          │      └─> <pool>-scale-to-zero (ess.ScheduledTask at the TTL)
                                                          └─> kubeconfig (get_cluster_credential, secret) ─> Kubernetes provider

ACK installs on each GPU node what the kubeadm backend installs over SSH: the NVIDIA driver
(the node pool's ``ack.aliyun.com/nvidia-driver-version`` label, always set, picks it), the
container runtime with the NVIDIA runtime, and
its own NVIDIA device plugin. So nothing is installed twice: no SSH step runs here, and
__main__.py deploys neither flannel nor NVIDIA's device plugin (``brings_*``). The GPU checks
run kubectl on the deployer with the kubeconfig (components/steps.py run_local_script).

Auto-release, best-effort: node pool instances belong to an ESS scaling group, which replaces
any instance that goes away, so ECS auto-release cannot end their billing. ACK documents no
scheduled scaling of node pools (its CronHPA scales pods, not nodes) and warns that "modifying
the Auto Scaling group directly ... can cause the node pool to behave unpredictably" ("Manually
scale a node pool"). The only scheduler here is still a one-time ESS scheduled task at each
pool's TTL (the same per-pool anchors as components/aliyun/auto_release.py) setting its scaling
group to 0: it most likely stops the nodes, but ACK may put them back or keep reporting the old
size. So the plan, the outputs and the README call the ACK TTL best-effort; `make down` is what
stops the meter. ACK's own API (ModifyClusterNodePool, desired_size 0) driven by a cloud-side
timer (OOS ACS::TimerTrigger + ACS::ExecuteAPI) is the documented route; it is not built yet
because the ExecuteAPI form of that ROA call could not be verified without an account. The
managed cluster (the Pro fee), the API server's load balancer and EIP keep billing until
`make down`; the `cost` output says so.

Day 2: the cluster's version and node pools' sizes update in place; the pool's instance type,
disk and spot settings update the pool's scaling configuration (new nodes only). A node pool
deleted (pool removed from config) drains and releases its nodes (ACK). `pulumi destroy`
deletes the pools, then the cluster, with what ACK made for it (the API server's load
balancer) and, through ``delete_options``, the Service/Ingress load balancers and log
projects that ACK would otherwise keep.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pulumi
import pulumi_alicloud as alicloud
import pulumi_kubernetes as k8s

from components import backend, steps
from components.aliyun import cost
from components.aliyun.auto_release import AutoRelease, AutoReleaseArgs
from components.aliyun.node import SYSTEM_DISK_CATEGORY, spot_strategy
from components.backend import ClusterChecks, GpuNode
from components.config import AckSettings, NodePool
from components.facts import ack as ack_support
from components.facts import catalog

if TYPE_CHECKING:
    from components.aliyun.network import Network
    from components.aliyun.ssh_key import SshKey
    from components.config import StackConfig

DRIVER_LABEL = "ack.aliyun.com/nvidia-driver-version"
# The allocatable check may start while the pools still add nodes and ACK installs their
# driver at join (no published figure): a margin, not a measurement.
ACK_ALLOCATABLE_TIMEOUT_SECONDS = 1500
# What "now" is for the TTL check (the offline harness sets the mocks' clock).
CLOCK: Callable[[], float] = time.time
# A scale-to-zero time must leave ESS room to accept it.
TASK_LEAD = timedelta(minutes=5)


class TtlPassed(pulumi.RunError):
    """A node pool's scale-to-zero time has passed: nodes made now would bill with no TTL."""


@dataclass(frozen=True, kw_only=True)
class AckClusterArgs:
    stack: str
    settings: AckSettings
    pools: tuple[NodePool, ...]
    vswitch_id: pulumi.Input[str]
    vpc_id: pulumi.Input[str]  # where to look for a NAT gateway ACK made (components/facts/ack.py)
    key_pair_name: pulumi.Input[str]
    pod_cidr: str
    system_disk_gib: int
    public_bandwidth_mbps: int
    ttl_hours: Decimal  # 0: the node pools never scale to zero
    spot: bool = False
    spot_price_limit: Decimal | None = None
    config: StackConfig | None = field(default=None, compare=False)  # prices for the cost output

    def __post_init__(self):
        if not self.pools or sum(p.count for p in self.pools) < 1:
            raise ValueError("AckClusterArgs.pools must hold at least one node")
        for pool in self.pools:
            problem = ack_support.pool_problem(pool.profile, self.settings.driver_version)
            if problem:
                raise ValueError(f"AckClusterArgs.pools: {pool.name}: {problem}")
        if self.spot_price_limit is not None and not self.spot:
            raise ValueError("AckClusterArgs.spot_price_limit needs spot=True")


def pool_labels(pool: NodePool, settings: AckSettings) -> list[dict[str, str]]:
    """The Kubernetes labels ACK puts on the pool's nodes (pure): our pool and GPU labels, and the
    driver label, which makes ACK install that driver on every node it adds to the pool."""
    labels = {
        backend.POOL_LABEL: pool.name,
        "gpu-k8s/driver": pool.profile.driver,
        "gpu-k8s/gpu-kind": pool.profile.kind,
        "nvidia.com/gpu.present": "true",
    }
    product = catalog.product_label(pool.profile.expected_gpu_name or "")
    if product:
        labels["nvidia.com/gpu.product"] = product
    labels[DRIVER_LABEL] = settings.driver_version
    return [{"key": k, "value": v} for k, v in labels.items()]


def _api_server_internet(connections) -> str:
    for conn in connections or []:
        value = conn.get("api_server_internet") if isinstance(conn, dict) else getattr(conn, "api_server_internet", None)
        if value:
            return value
    return ""


def scale_to_zero_time(release: str) -> str:
    """ESS wants YYYY-MM-DDThh:mmZ; the anchor gives yyyy-MM-ddTHH:mm:00Z (pure)."""
    return release.removesuffix(":00Z") + "Z"


def future_scale_to_zero_time(release: str, pool: str, now: float) -> str:
    """The task's launch time, or TtlPassed when it is not ahead of ``now``.

    The task runs once. After it has fired (or when its time has gone by), a `pulumi up`
    that restores the pool (`--refresh` reads it at 0, the config says ``count``) would
    leave nodes billing with no TTL at all, and ESS refuses a past time anyway: the run
    stops with what to do instead.
    """
    when = datetime.strptime(release, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if when <= datetime.fromtimestamp(now, tz=UTC) + TASK_LEAD:
        raise TtlPassed(
            f"gpu-k8s:ttlHours of node pool {pool} ended at {release}: its nodes were (or are about to be) scaled to 0. "
            "Run `make extend` (a new TTL from now; on ACK it refreshes, so a pool at 0 goes back to its count, then "
            "`make retest`), or `make down` to stop the cluster fee too."
        )
    return scale_to_zero_time(release)


def cluster_name(stack: str, vswitch_id: str) -> str:
    """The ACK cluster's name (pure): the stack's, and a hash of its vSwitch (unique per deployment)."""
    return f"gpu-k8s-{stack[:40]}-{hashlib.sha256(vswitch_id.encode()).hexdigest()[:6]}"


def task_name(pool: str, scaling_group_id: str) -> str:
    """The ESS task's name, at most 40 characters (pure).

    ESS wants it unique in the region and account: two engineers' stacks of the same name
    would clash on stack and pool alone, so it carries a hash of the pool's scaling group.
    """
    digest = hashlib.sha256(scaling_group_id.encode()).hexdigest()[:8]
    return f"gpu-k8s-ttl-{pool[:16].rstrip('-')}-{digest}"


class AckCluster(pulumi.ComponentResource):
    kind = backend.ACK
    brings_device_plugin = True  # ACK's NVIDIA device plugin on GPU nodes
    control_plane: alicloud.cs.ManagedKubernetes
    node_pools: dict[str, alicloud.cs.NodePool]
    scale_to_zero: dict[str, alicloud.ess.ScheduledTask]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider

    @classmethod
    def from_config(cls, name: str, cfg: StackConfig, network: Network, ssh_key: SshKey) -> AckCluster:
        assert cfg.ack is not None
        return cls(
            name,
            AckClusterArgs(
                stack=cfg.stack,
                settings=cfg.ack,
                pools=cfg.pools,
                vswitch_id=network.vswitch.id,
                vpc_id=network.vpc.id,
                key_pair_name=ssh_key.key_pair_name,
                pod_cidr=cfg.pod_cidr,
                system_disk_gib=cfg.system_disk_gib,
                public_bandwidth_mbps=cfg.public_bandwidth_mbps,
                ttl_hours=cfg.ttl_hours,
                spot=cfg.spot,
                spot_price_limit=cfg.spot_price_limit,
                config=cfg,
            ),
        )

    def __init__(self, name: str, args: AckClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:ack:AckCluster", name, {}, opts)
        self.args = args
        settings = args.settings
        tags = {"managed-by": "gpu-k8s", "gpu-k8s-stack": args.stack}
        self.control_plane = alicloud.cs.ManagedKubernetes(
            f"{name}-control-plane",
            # ACK refuses a second cluster of the same name in an account and region: the name
            # carries a hash of this stack's vSwitch, so two engineers' `ack` stacks differ.
            name=pulumi.Output.from_input(args.vswitch_id).apply(lambda v: cluster_name(args.stack, v)),
            cluster_spec=settings.cluster_spec,
            version=settings.kubernetes_version,
            vswitch_ids=[args.vswitch_id],
            pod_cidr=args.pod_cidr,
            service_cidr=ack_support.SERVICE_CIDR,
            # Nodes get their own public IPs (node pools below) to pull images: no NAT gateway is
            # needed. The provider never sends false here (components/facts/ack.py NAT_GATEWAY_FEE),
            # so ACK's default decides; self.nat_gateways finds one after create and prices it.
            new_nat_gateway=False,
            # The API server needs a public endpoint (kubectl runs here): an EIP on ACK's internal
            # CLB (ACK, "Access the API server from the public network"), priced in the cost output.
            slb_internet_enabled=True,
            addons=[alicloud.cs.ManagedKubernetesAddonArgs(name="flannel")],
            deletion_protection=False,  # `make down` must be able to delete it
            # ACK deletes what it made with the cluster (the API server's CLB, its RAM role:
            # retain_resources' default). delete_options adds what it would keep: the
            # load balancers of Services/Ingresses (SLB, ALB) and the log projects (SLS).
            delete_options=[
                alicloud.cs.ManagedKubernetesDeleteOptionArgs(resource_type=kind, delete_mode="delete")
                for kind in ack_support.DELETED_WITH_CLUSTER
            ],
            tags=tags,
            # A replacement (podCidr: ForceNew) deletes the old cluster first: two clusters
            # would bill at once and fight over the VPC's route table (flannel's routes).
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        cluster_id = self.control_plane.id
        self.release = AutoRelease(
            f"{name}-ttl",
            AutoReleaseArgs(
                ttl_hours=args.ttl_hours,
                hostnames=tuple(p.name for p in args.pools),
                # No triggers: a spot change updates the pool in place and its nodes keep running,
                # so their TTL stays (kubeadm re-anchors because its instances are replaced).
                replace_triggers=(),
            ),
            pulumi.ResourceOptions(parent=self),
        )
        self.node_pools, self.scale_to_zero = {}, {}
        for pool in args.pools:
            self.node_pools[pool.name] = alicloud.cs.NodePool(
                f"{name}-{pool.name}-pool",
                cluster_id=cluster_id,
                node_pool_name=pool.name,
                vswitch_ids=[args.vswitch_id],
                instance_types=[pool.instance_type],
                desired_size=str(pool.count),
                instance_charge_type="PostPaid",
                spot_strategy=spot_strategy(args.spot, args.spot_price_limit),
                spot_price_limits=(
                    [
                        alicloud.cs.NodePoolSpotPriceLimitArgs(
                            instance_type=pool.instance_type, price_limit=str(args.spot_price_limit)
                        )
                    ]
                    if args.spot_price_limit is not None
                    else None
                ),
                image_type=ack_support.gpu_image_type(settings.kubernetes_version),
                system_disk_category=SYSTEM_DISK_CATEGORY,
                system_disk_size=args.system_disk_gib,
                key_name=args.key_pair_name,  # key only: no password is ever set
                # A public IP per node, billed by traffic: pulls from nvcr.io/docker.io without a NAT gateway.
                internet_charge_type="PayByTraffic",
                internet_max_bandwidth_out=args.public_bandwidth_mbps,
                labels=pool_labels(pool, settings),
                tags={**tags, "gpu-k8s-pool": pool.name},
                opts=pulumi.ResourceOptions(parent=self),
            )
            release = self.release.release_times.get(pool.name)
            if release is not None:
                self.scale_to_zero[pool.name] = alicloud.ess.ScheduledTask(
                    f"{name}-{pool.name}-scale-to-zero",
                    scheduled_task_name=self.node_pools[pool.name].scaling_group_id.apply(
                        lambda sg, p=pool.name: task_name(p, sg)
                    ),
                    description=f"gpu-k8s ttlHours: scale node pool {pool.name} to 0 instances (stops its GPU billing)",
                    scaling_group_id=self.node_pools[pool.name].scaling_group_id,
                    launch_time=release.apply(lambda t, p=pool.name: future_scale_to_zero_time(t, p, CLOCK())),
                    # 0 instances; the group's maximum is left as ACK set it (ESS: at least one
                    # of desired, min, max; min 0 so that desired 0 is allowed).
                    desired_capacity=0,
                    min_value=0,
                    launch_expiration_time=1800,  # retried for 30 minutes if ESS is busy
                    task_enabled=True,
                    opts=pulumi.ResourceOptions(parent=self),
                )
        # NAT gateways in this stack's VPC once the cluster exists: only ACK makes one there.
        self.nat_gateways = alicloud.vpc.get_nat_gateways_output(
            vpc_id=pulumi.Output.all(args.vpc_id, cluster_id).apply(lambda ids: ids[0])
        ).ids.apply(lambda ids: sorted(ids or []))
        credential = alicloud.cs.get_cluster_credential_output(
            cluster_id=cluster_id, temporary_duration_minutes=ack_support.KUBECONFIG_MINUTES
        )
        self.kubeconfig = pulumi.Output.secret(credential.kube_config)
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            delete_unreachable=True,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(self.node_pools.values())),
        )
        self.checks = ClusterChecks(
            run=lambda step, **kw: steps.run_local_script(step, kubeconfig=self.kubeconfig, **kw),
            plugin_namespace=ack_support.DEVICE_PLUGIN_NAMESPACE,
            plugin_selector=ack_support.DEVICE_PLUGIN_SELECTOR,
            node_setup=backend.ACK,
            allocatable_timeout_seconds=ACK_ALLOCATABLE_TIMEOUT_SECONDS,
        )
        self.ready = list(self.node_pools.values())
        self.network_ready = self.ready  # ACK's flannel addon comes with the cluster and its nodes
        # connections is a list of one (pulumi-alicloud 4.0.0 ManagedKubernetesConnection).
        self.api_endpoint = self.control_plane.connections.apply(_api_server_internet)
        image_type = ack_support.gpu_image_type(settings.kubernetes_version)
        self.image_id = f"ACK GPU node image ({image_type}), chosen by ACK per node pool"
        self.auto_release = self._auto_release_summary()
        self.register_outputs({"clusterId": cluster_id, "nodePools": list(self.node_pools)})

    def _auto_release_summary(self) -> pulumi.Input[str]:
        if not self.release.earliest:
            return "off: the node pools and the cluster bill until `make down`"
        return self.release.earliest.apply(
            lambda t: (
                f"{t}, BEST-EFFORT: an ESS scheduled task sets each pool's scaling group to 0, which ACK "
                "warns against (it may restore the nodes); `make down` is what stops the meter. The cluster, "
                "its API load balancer and EIP bill until `make down`"
            )
        )

    def bake_images(self, after: list[pulumi.Resource]) -> list[pulumi.Resource]:
        return []  # ACK's node pools boot ACK's GPU image: nothing of ours to bake

    def gpu_nodes(self) -> list[GpuNode]:
        """A slot per node of each pool: ACK names the nodes, the pods select the pool's label."""
        driver = self.args.settings.driver_version
        return [
            GpuNode(
                slot,
                pool.profile,
                driver,
                ((backend.POOL_LABEL, pool.name),),
                pool=pool.name,
                # A new cluster or node pool, another type or driver: the GPU test runs again.
                verifies=pulumi.Output.all(self.control_plane.id, self.node_pools[pool.name].id).apply(
                    lambda ids, pool=pool: backend.digest(ids, pool.instance_type, driver, self.args.spot)
                ),
            )
            for pool in self.args.pools
            for slot in pool.node_names()
        ]

    def describe_nodes(self) -> dict:
        """The `nodes` output: a line per node pool (ACK names and creates the nodes)."""
        return {
            pool.name: {
                "pool": pool.name,
                "role": "worker (ACK node pool)",
                "instanceType": pool.instance_type,
                "count": pool.count,
                "gpu": pool.profile.summary(),
                "driver": f"{pool.profile.driver} {self.args.settings.driver_version} (installed by ACK: {DRIVER_LABEL})",
                "nodePoolId": self.node_pools[pool.name].node_pool_id,
                "autoReleaseTime": self.release.release_times.get(pool.name) or "off",
            }
            for pool in self.args.pools
        }

    def detected_gpus(self) -> dict[str, dict[str, str]]:
        """nvidia-smi is not read on ACK (no SSH): the catalog's GPU and the requested driver, labelled so."""
        return {
            n.name: {
                "gpu": f"{n.profile.expected_gpu_name or n.profile.summary()} (expected)",
                "driverVersion": f"{n.driver_version} (requested: {DRIVER_LABEL})",
            }
            for n in self.gpu_nodes()
        }

    def timings(self) -> str:
        return "not measured on ACK: ACK creates and sets up the nodes (see the node pool's scaling activities)"

    def cost(self) -> pulumi.Output[dict]:
        if self.args.config is None:
            raise ValueError("AckCluster.cost needs AckClusterArgs.config (the prices)")
        cfg, fees = self.args.config, ack_support.cluster_fees(self.args.settings.cluster_spec)
        return self.nat_gateways.apply(lambda nat: cost.ack_cost(cfg, fees=fees, nat_gateways=nat))
