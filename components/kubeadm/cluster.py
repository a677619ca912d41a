"""KubeCluster: kubeadm on the fleet, workers joined in parallel, kubeconfig and provider.

    every node: NodeBootstrap (parallel across nodes), after the port-22 rules
    control plane: kubeadm-init ─┬─> kubeconfig (secret) ─> Kubernetes provider (after the 6443 rules)
                                 ├─> ca-hash (secret) ────────────┐
                                 ├─> <worker>-join-token ─────────┴─> <worker>-kubeadm-join  (per worker, parallel)
                                 └─> prune-nodes
    every node: node labels (after its init/join and its gpu-verify)

Workers depend on the control plane, never on each other, so the bootstrap critical
path does not grow with the node count. Each worker has its own bootstrap token
(kubeadm tokens live 2 h): its random value is kept per worker *instance* (keepers), so
a worker that is replaced (or added days later) gets a new token, created on the control
plane right before its join, and the join re-runs with it. A join retried more than 2 h
after its token step needs the token made again: `make rejoin NODE=<worker>`.

A worker removed from the config is drained and deleted from Kubernetes by prune-nodes
during `pulumi up`, before Pulumi releases its instance; `pulumi destroy` runs no remote command at all, so it never hangs on a
node that is already gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import steps
from components.aliyun.fleet import Fleet
from components.backend import GPU_NODE_LABEL, GPU_PRESENT_LABEL, POOL_LABEL, GpuNode, digest
from components.facts import catalog, cuda
from components.kubeadm import timings
from components.kubeadm.bootstrap import NodeBootstrap, NodeBootstrapArgs, NodeSetup

if TYPE_CHECKING:  # prefetch imports monitoring, which imports this module
    from components.kubeadm.prefetch import NodeImages

IMAGE_REPOSITORIES = {"aliyun": "registry.aliyuncs.com/google_containers", "upstream": "registry.k8s.io"}
API_PORT = 6443
DRAIN_TIMEOUT_SECONDS = 120


@dataclass(frozen=True, kw_only=True)
class KubeClusterArgs:
    fleet: Fleet
    private_key: pulumi.Input[str]
    setup: NodeSetup
    pod_cidr: str
    ssh_rules: tuple[pulumi.Resource, ...] = ()  # security-group rules opening 22: every SSH step waits for them
    api_rules: tuple[pulumi.Resource, ...] = ()  # rules opening 6443: the Kubernetes provider waits for them
    images: NodeImages | None = None  # pulled ahead on each node while the driver builds (None: only kubeadm's)
    # GPU Feature Discovery labels the nodes (components/gpu/feature_discovery.py): it owns
    # nvidia.com/gpu.product, so the node patch leaves that label to it.
    feature_discovery: bool = False

    def __post_init__(self):
        if not self.fleet.nodes:
            raise ValueError("KubeClusterArgs.fleet has no nodes")

    @property
    def image_repository(self) -> str:
        return IMAGE_REPOSITORIES[self.setup.package_mirror]


def node_labels(
    pool: str, profile: catalog.GpuProfile | None, gpu_name: str | None, *, feature_discovery: bool = False
) -> dict[str, str]:
    """Scheduling labels; a non-GPU control plane gets only its pool. With GPU Feature Discovery
    the nvidia.com/gpu.* labels are its own (two writers of one label would flip it each `up`)."""
    labels = {POOL_LABEL: pool}
    if profile is not None:
        labels["gpu-k8s/driver"] = profile.driver
        labels[GPU_NODE_LABEL] = profile.kind
        labels[GPU_PRESENT_LABEL] = "true"  # what NVIDIA's charts, GFD and DCGM select on
        product = catalog.product_label(gpu_name or "") or catalog.product_label(profile.expected_gpu_name or "")
        if product and not feature_discovery:
            labels["nvidia.com/gpu.product"] = product
    return labels


def _bootstrap_token(name: str, parent: pulumi.Resource, instance_id: pulumi.Input[str]) -> pulumi.Output[str]:
    """kubeadm bootstrap token [a-z0-9]{6}.[a-z0-9]{16}, kept secret; a new one per instance (keepers)."""
    parts = [
        random.RandomString(
            f"{name}-token-{role}",
            length=length,
            upper=False,
            special=False,
            numeric=True,
            lower=True,
            keepers={"instance": instance_id},
            opts=pulumi.ResourceOptions(parent=parent, additional_secret_outputs=["result"]),
        ).result
        for role, length in (("id", 6), ("secret", 16))
    ]
    return pulumi.Output.secret(pulumi.Output.concat(parts[0], ".", parts[1]))


class KubeCluster(pulumi.ComponentResource):
    bootstraps: dict[str, NodeBootstrap]
    init: pulumi.Resource
    joins: dict[str, pulumi.Resource]
    kubeconfig: pulumi.Output[str]  # secret
    provider: k8s.Provider
    node_labels: dict[str, k8s.core.v1.NodePatch]

    def __init__(self, name: str, args: KubeClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:cluster:KubeCluster", name, {}, opts)
        child = pulumi.ResourceOptions(parent=self)
        fleet, setup = args.fleet, args.setup
        self.bootstraps = {
            node.hostname: NodeBootstrap(
                f"{node.hostname}-bootstrap",
                NodeBootstrapArgs(
                    hostname=node.hostname,
                    public_ip=node.public_ip,
                    instance_id=node.instance.id,
                    private_key=args.private_key,
                    profile=node.profile,
                    setup=setup,
                    after=args.ssh_rules,
                    images=args.images.for_node(node.args.pool, node.profile is not None) if args.images else (),
                    kubeadm_image_repository=args.image_repository if node is fleet.control_plane else "",
                ),
                child,
            )
            for node in fleet.nodes
        }
        cp = fleet.control_plane
        on_cp = steps.host(cp.public_ip, args.private_key, cp.instance.id)
        self.control_plane_host = on_cp
        self._fleet, self._setup = fleet, setup

        def on_control_plane(role: str, script: str, after: list[pulumi.Resource], **kw):
            return steps.run_script(f"{name}-{role}", script=script, on=on_cp, after=after, parent=self, **kw)

        self.init = on_control_plane(
            "kubeadm-init",
            "40-kubeadm-init.sh",
            self.bootstraps[cp.hostname].kubernetes_ready,
            env={
                "KUBERNETES_VERSION": setup.kubernetes_version,
                "IMAGE_REPOSITORY": args.image_repository,
                "API_SERVER_IP": cp.public_ip,
                "ADVERTISE_ADDRESS": cp.private_ip,
                "POD_CIDR": args.pod_cidr,
                "NODE_NAME": cp.hostname,
                # A GPU node that is also the control plane must take workloads: untaint it.
                "CONTROL_PLANE_TAINT": "true" if cp.profile is None else "false",
            },
            timeout="30m",
        )
        kubeconfig_cmd = on_control_plane(
            "kubeconfig", "41-kubeconfig.sh", [self.init], env={"API_SERVER_IP": cp.public_ip}, secret_stdout=True, timeout="5m"
        )
        self.kubeconfig = pulumi.Output.secret(kubeconfig_cmd.stdout)

        self.joins = {cp.hostname: self.init}
        if fleet.workers:
            ca_hash = on_control_plane("ca-hash", "42-ca-cert-hash.sh", [self.init], secret_stdout=True, timeout="5m")
            for worker in fleet.workers:
                # A token per worker instance, made right before its join (after its own bootstrap),
                # so it is live whenever that worker joins: first deploy, scale-out, replacement.
                token = _bootstrap_token(worker.hostname, self, worker.instance.id)
                token_cmd = steps.run_script(
                    f"{worker.hostname}-join-token",
                    script="43-join-token.sh",
                    on=on_cp,
                    env={"FOR_NODE": worker.hostname},
                    stdin=token,
                    after=[self.init],
                    order_after=self.bootstraps[worker.hostname].kubernetes_ready,
                    parent=self,
                    timeout="5m",
                    own_file=True,  # every worker's token step runs this script on the control plane
                )
                self.joins[worker.hostname] = steps.run_script(
                    f"{worker.hostname}-kubeadm-join",
                    script="50-kubeadm-join.sh",
                    on=steps.host(worker.public_ip, args.private_key, worker.instance.id),
                    env={
                        "CONTROL_PLANE_ENDPOINT": pulumi.Output.concat(cp.private_ip, f":{API_PORT}"),
                        "NODE_NAME": worker.hostname,
                        "KUBERNETES_VERSION": setup.kubernetes_version,
                        "IMAGE_REPOSITORY": args.image_repository,
                    },
                    stdin=pulumi.Output.concat(token, "\n", ca_hash.stdout.apply(str.strip), "\n"),
                    # A re-run (replacement) of the token step, e.g. `make rejoin`, re-runs the join.
                    after=[*self.bootstraps[worker.hostname].kubernetes_ready, token_cmd],
                    order_after=[ca_hash],
                    parent=self,
                    timeout="20m",
                )
        # Drain and delete nodes no longer in the config (runs during `up` only).
        on_control_plane(
            "prune-nodes",
            "60-prune-nodes.sh",
            [self.init],
            env={
                "DESIRED_NODES": " ".join(n.hostname for n in fleet.nodes),
                "DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_SECONDS),
            },
            timeout="10m",
        )

        # delete_unreachable: `pulumi destroy` of a cluster that is already gone (auto-released,
        # or its instance deleted first) drops the objects from state instead of hanging.
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            delete_unreachable=True,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self.joins.values(), *args.api_rules]),
        )
        self.node_labels = {}
        for node in fleet.nodes:
            boot = self.bootstraps[node.hostname]
            gpu_name = boot.gpu_name if boot.gpu_name is not None else pulumi.Output.from_input("")
            labels = gpu_name.apply(
                lambda g, n=node: node_labels(n.args.pool, n.profile, g, feature_discovery=args.feature_discovery)
            )
            self.node_labels[node.hostname] = k8s.core.v1.NodePatch(
                f"{node.hostname}-labels",
                metadata=k8s.meta.v1.ObjectMetaPatchArgs(name=node.hostname, labels=labels),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=self.provider,
                    depends_on=[self.joins[node.hostname]] + ([boot.gpu_verify] if boot.gpu_verify is not None else []),
                ),
            )
        self.register_outputs({"kubeconfig": self.kubeconfig, "controlPlane": cp.hostname})

    def timings(self) -> pulumi.Output[dict]:
        """The `timings` output (components/kubeadm/timings.py): every node's steps, then init and joins."""
        cp = self._fleet.control_plane.hostname
        steps: list[tuple[timings.TimedStep, pulumi.Output[str]]] = []
        for boot in self.bootstraps.values():
            steps += boot.timed
        ready = {host: [f"{host}-bootstrap-{r}" for r in ("container-runtime", "kube-packages")] for host in self.bootstraps}
        init = timings.TimedStep("kubeadm-init", cp, "kubeadm-init", tuple(ready[cp]))
        steps.append((init, self.init.stderr))
        for host, join in self.joins.items():
            if host != cp:
                steps.append(
                    (timings.TimedStep(f"{host}-kubeadm-join", host, "kubeadm-join", (*ready[host], init.name)), join.stderr)
                )
        gpu = [n.hostname for n in self._fleet.nodes if n.profile is not None]
        return pulumi.Output.all(*[e for _, e in steps]).apply(
            lambda errs: timings.report([s for s, _ in steps], list(errs), gpu)
        )

    def gpu_nodes(self) -> list[GpuNode]:
        """(node, profile, expected driver) for every GPU node, for the GPU test.

        ``verifies``: the node's instance, its type, its driver and runtime steps (their inputs,
        and their ids: a step replaced by a new script is a new id), the driver step 11 reports
        it installed, and the cluster (the kubeadm init run): a change to any of them runs the
        GPU test again.
        """
        return [
            GpuNode(
                n.hostname,
                n.profile,
                cuda.node_driver(n.profile, self._setup.driver_version, self._setup.grid_driver_version),
                pool=n.args.pool,
                verifies=pulumi.Output.all(
                    n.instance.id,
                    self.init.id,
                    *self.bootstraps[n.hostname].verified_steps,
                    self.bootstraps[n.hostname].driver_installed,
                ).apply(lambda ids, n=n: digest(ids, n.args.instance_type, self.bootstraps[n.hostname].verified_setup)),
            )
            for n in self._fleet.nodes
            if n.profile is not None
        ]

    def detected_gpus(self) -> dict[str, dict[str, pulumi.Output[str]]]:
        """What nvidia-smi reported on each GPU node (the `gpus` stack output)."""
        return {
            host: {"gpu": boot.gpu_name, "driverVersion": boot.driver_version}
            for host, boot in self.bootstraps.items()
            if boot.gpu_name is not None
        }
