"""The kubeadm backend: our own GPU ECS instances, set up over SSH, kubeadm on the first node.

The seed walk-through's path (gpu-k8s:cluster kubeadm, the default): per node an auto-release
anchor and a pay-as-you-go instance (components/aliyun/fleet.py), then the driver by GPU family,
containerd with the NVIDIA runtime and kubeadm over SSH (cluster.py, bootstrap.py), then the
pod network (flannel, cni.py). The GPU checks run kubectl on the control plane over SSH.

Not a component of its own: it builds the same top-level components, under the same names,
that __main__.py built before the ACK backend existed, so a running stack's resources keep
their URNs (a new parent would change every URN, and Pulumi would replace the whole cluster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pulumi

from components import backend, steps
from components.aliyun import cost
from components.aliyun.auto_release import AutoRelease, AutoReleaseArgs
from components.aliyun.fleet import Fleet, FleetArgs, find_image, hostnames
from components.aliyun.node import replacing_inputs
from components.backend import ClusterChecks, GpuImages, GpuNode
from components.config.gpu import feature_discovery_supported
from components.kubeadm import bake, prefetch
from components.kubeadm.bootstrap import NodeSetup
from components.kubeadm.cluster import IMAGE_REPOSITORIES, KubeCluster, KubeClusterArgs
from components.kubeadm.cni import Flannel, FlannelArgs

if TYPE_CHECKING:
    from components.aliyun.network import Network
    from components.aliyun.ssh_key import SshKey
    from components.config import StackConfig


class KubeadmBackend:
    """gpu-k8s:cluster kubeadm (components/backend.py ClusterBackend)."""

    kind = backend.KUBEADM
    brings_device_plugin = False  # the GPU stack deploys NVIDIA's device plugin

    def __init__(self, cfg: StackConfig, network: Network, ssh_key: SshKey, gpu_images: GpuImages):
        self._cfg = cfg
        # Nodes: one release anchor per node, re-taken when that node's instance is replaced.
        self.release = AutoRelease(
            "gpu-k8s-ttl",
            AutoReleaseArgs(
                ttl_hours=cfg.ttl_hours,
                hostnames=tuple(hostnames(cfg.pools, cfg.control_plane_instance_type)),
                replace_triggers=replacing_inputs(cfg.spot, cfg.spot_price_limit),
            ),
        )
        setup = NodeSetup(
            driver_version=cfg.driver_version,
            grid_driver_version=cfg.grid_driver_version,
            install_cuda_toolkit=cfg.install_cuda_toolkit,
            cuda_toolkit_version=cfg.cuda_toolkit_version,
            grid_driver_url=cfg.grid_driver_url,
            container_toolkit_version=cfg.container_toolkit_version,
            package_mirror=cfg.kubernetes_mirror,
            registry_mirrors=cfg.registry_mirrors,
            install_docker=cfg.install_docker,
            gpu_isolation=cfg.gpu_isolation,
            kubernetes_version=cfg.kubernetes_version,
        )
        # Pulled while the driver builds: the pod network's images and the GPU stack's.
        images = prefetch.node_images(cfg.flannel_version, gpu_images)
        # gpu-k8s:nodeImage bake: GPU nodes created now boot from their driver kind's baked image,
        # where it exists; where not, a builder bakes it beside this run's (stock) nodes.
        base_image = cfg.image_id or find_image(cfg.image_name_regex)
        kubeadm_repository = IMAGE_REPOSITORIES[cfg.kubernetes_mirror]
        targets = bake.bake_targets(cfg.pools) if cfg.node_image == "bake" else {}
        self.bake_keys = {
            target: bake.bake_key(target, setup, cfg.system_disk_gib, pool.profile.grid_plugin or "", kubeadm_repository)
            for target, pool in targets.items()
        }
        found = {target: bake.find_baked_image(key) for target, key in self.bake_keys.items()}
        self.baked_images = {target: image for target, (image, _) in found.items() if image}
        for target, (image, status) in found.items():
            if image is None and status in bake.BAKING_STATUSES:
                pulumi.log.warn(
                    f"gpu-k8s:nodeImage bake: the {target} image of this configuration is {status} (another `up` is "
                    "baking it: `make baked-images`); nodes install as stock meanwhile"
                )
            elif image is None and status != "none":
                pulumi.log.warn(
                    f"gpu-k8s:nodeImage bake: the {target} image of this configuration is {status}: it will not become "
                    "usable and no new bake starts while it exists; `make delete-images` removes it, then the next `up` "
                    "bakes again. Nodes install as stock meanwhile"
                )
        self.fleet = Fleet(
            "gpu-k8s",
            FleetArgs(
                pools=cfg.pools,
                control_plane_instance_type=cfg.control_plane_instance_type,
                image_id=base_image,
                baked_images=self.baked_images,
                vswitch_id=network.vswitch.id,
                security_group_id=_security_group_id(network),
                key_pair_name=ssh_key.key_pair_name,
                system_disk_gib=cfg.system_disk_gib,
                public_bandwidth_mbps=cfg.public_bandwidth_mbps,
                auto_release_times=self.release.release_times,
                spot=cfg.spot,
                spot_price_limit=cfg.spot_price_limit,
            ),
        )
        # Bakes still to do: made by bake_images(), after the cluster works (module docstring of bake.py).
        self._pending_bakes = [
            bake.NodeImageBakeArgs(
                stack=cfg.stack,
                target=target,
                key=self.bake_keys[target],
                pool=pool,
                setup=setup,
                images=images.for_node(pool.name, True),
                kubeadm_image_repository=kubeadm_repository,
                base_image_id=base_image,
                vswitch_id=network.vswitch.id,
                security_group_id=_security_group_id(network),
                key_pair_name=ssh_key.key_pair_name,
                private_key=ssh_key.private_key,
                system_disk_gib=cfg.system_disk_gib,
                public_bandwidth_mbps=cfg.public_bandwidth_mbps,
                ssh_rules=tuple(network.ssh_rules),
            )
            for target, pool in targets.items()
            if found[target][1] == "none"
        ]
        self.bakes: list[bake.NodeImageBake] = []
        # Bootstrap over SSH: driver by GPU family, containerd + NVIDIA runtime, kubeadm, kubeconfig.
        self.cluster = KubeCluster(
            "gpu-k8s",
            KubeClusterArgs(
                fleet=self.fleet,
                private_key=ssh_key.private_key,
                setup=setup,
                pod_cidr=cfg.pod_cidr,
                images=images,
                ssh_rules=tuple(network.ssh_rules),
                api_rules=tuple(network.api_rules),
                feature_discovery=feature_discovery_supported(cfg.device_plugin_version),
            ),
        )
        self.provider = self.cluster.provider
        self.kubeconfig = self.cluster.kubeconfig
        on_cp = self.cluster.control_plane_host
        self.checks = ClusterChecks(
            run=lambda name, **kw: steps.run_script(name, on=on_cp, **kw),
            node_setup="gpu-k8s",
        )
        self.ready = list(self.cluster.node_labels.values())
        # The pod network: flannel on the cluster's provider (what every pod waits for).
        self.cni = Flannel(
            "gpu-k8s-cni",
            FlannelArgs(pod_cidr=cfg.pod_cidr, flannel_version=cfg.flannel_version),
            pulumi.ResourceOptions(providers={"kubernetes": self.provider}),
        )
        self.network_ready = [self.cni]
        self.api_endpoint = self.fleet.control_plane.public_ip
        self.image_id = self.fleet.control_plane.image_id
        self.auto_release = self.release.earliest or "off: the instances bill until `make down`"

    def bake_images(self, after: list[pulumi.Resource]) -> list[pulumi.Resource]:
        """gpu-k8s:nodeImage bake: the builders of images not baked yet, after ``after`` (the GPU test)."""
        self.bakes = [
            bake.NodeImageBake(f"gpu-k8s-{args.builder}", args, pulumi.ResourceOptions(depends_on=after))
            for args in self._pending_bakes
        ]
        return list(self.bakes)

    def gpu_nodes(self) -> list[GpuNode]:
        return self.cluster.gpu_nodes()

    def describe_nodes(self) -> dict:
        return self.fleet.describe()

    def detected_gpus(self):
        return self.cluster.detected_gpus()

    def timings(self):
        return self.cluster.timings()  # per node, in run order; measured on a real run

    def cost(self) -> dict:
        summary = cost.stack_cost(self._cfg, self.fleet)
        if self.bake_keys:
            pending = {a.target: a for a in self._pending_bakes}
            summary["bakedImages"] = {}
            for target in self.bake_keys:
                line = {**bake.storage_cost(self._cfg.system_disk_gib), "image": self.baked_images.get(target) or "not yet"}
                if target in pending:
                    pool = pending[target].pool
                    price = cost.node_price(
                        pending[target].builder,
                        "bake",
                        pool.instance_type,
                        live=None,
                        pool_override=pool.hourly_price_cny,
                        stack_override=self._cfg.hourly_price_cny,
                        list_price=pool.profile.list_price_cny and (pool.profile.list_price_cny, pool.profile.price_source or ""),
                    )
                    hourly = f"{price.hourly_cny} CNY/h" if price.hourly_cny is not None else "its type's price (unknown here)"
                    line["builder"] = (
                        f"this `up` bakes it after the GPU test: one more {pool.instance_type} ({hourly}) for about 15 "
                        f"minutes, at most {bake.BUILDER_TTL_HOURS} h (its auto-release); the next `up` deletes it "
                        "(`make up` runs that `up` right after)"
                    )
                summary["bakedImages"][target] = line
        return summary


def _security_group_id(network: Network) -> pulumi.Output[str]:
    """The nodes' group: opened to allowedCidrs, which kubeadm always has (config.py)."""
    if network.security_group is None:
        raise ValueError("the kubeadm backend needs the network's security group (allowedCidrs is empty)")
    return network.security_group.id
