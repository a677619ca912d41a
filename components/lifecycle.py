"""LifecycleGuard: what a running stack cannot change in place is refused before anything moves.

The program cannot see the config of the last `pulumi up`, but the engine can: the guard
is a local command whose stdout records this stack's *facts* (region, backend, which node
is the kubeadm control plane, the kubeadm Kubernetes version and pod CIDR). When a fact
changes, the command's input changes, which pulumi-command runs as an update with the
previous stdout in ``PULUMI_COMMAND_STDOUT`` (provider/pkg/provider/local/commandOutputs.go,
``addPreviousOutputInEnv``, default true); ``components/scripts/local/lifecycle-guard.sh``
compares and fails with one line per refused change, naming the change and what to do.

Nothing else moves first: the guard registers a stack transformation that makes every
resource constructed after it depend on it. The Python SDK registers a resource only once
the URNs of its dependencies resolve, and the engine answers a custom resource's
RegisterResource only when its step is done (pulumi/pulumi pkg/resource/deploy/source_eval.go,
``RegisterResource``: "Now block waiting for the operation to finish"), so while the guard
runs nothing else is registered. A failed step cancels the deployment (step_executor.go
``cancelDueToError``; with ``--continue-on-error`` its dependents are skipped instead), and
the deletes of resources the program no longer declares run only after the program's last
registration with no error seen (deployment_executor.go ``Execute`` -> ``performDeletes``),
so none run either. Lookups (invokes: zones, images, prices) are no resources, so the
program also waits for the guard before going on (``__init__``): the alicloud provider is
registered with the first of them, and a region change must not reach the provider's state.

``pulumi preview`` does not run commands, so it lists what the refused change would do;
``pulumi up`` then stops at the guard. The offline ``python -m tools.plan --diff`` runs the
guard's real script and shows the refusal.

Refused (each needs `make down`, then `make up`):
- ``alicloud:region``: the alicloud provider is updated in place on a region change (no
  ForcesProviderReplace on region: pulumi-alicloud provider/resources.go), so the stack's
  resources would be addressed in the new region and the old ones left behind;
- ``gpu-k8s:cluster``: kubeadm <-> ACK under a running cluster;
- ``control-plane`` (kubeadm): the node that ran kubeadm init. Removing, renaming or
  reordering the first pool, or adding or removing ``controlPlaneInstanceType``, would make
  another node the control plane: ``40-kubeadm-init.sh`` skips an initialised node and
  ``50-kubeadm-join.sh`` a joined one, so the cluster would be stranded;
- ``gpu-k8s:kubernetesVersion`` (kubeadm): nothing here upgrades a running cluster;
- ``gpu-k8s:podCidr`` (kubeadm): fixed at kubeadm init and in flannel's config.

Allowed, with what they do (README "What a second `up` does"): replacing the control-plane
*instance* in place (same node, new machine: the cluster is rebuilt on it), ACK's
``ackKubernetesVersion`` (ACK upgrades the control plane) and ACK's ``podCidr`` (ACK
replaces the cluster, and every Kubernetes object follows it).

A stack made before the guard existed gets it created on its next `up`, with that run's
facts: a change made in that same `up` is not compared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi
import pulumi_command as command
from pulumi.runtime.sync_await import _sync_await

from components import steps
from components.aliyun.fleet import hostnames
from components.backend import KUBEADM
from components.config import StackConfig

SCRIPT = "local/lifecycle-guard.sh"
_FACT_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9:._-]*$")


def stack_facts(cfg: StackConfig) -> tuple[tuple[str, str], ...]:
    """(key, value) pairs the guard keeps: what this stack is (pure)."""
    facts = [("alicloud:region", cfg.region), ("gpu-k8s:cluster", cfg.cluster)]
    if cfg.cluster == KUBEADM:
        facts += [
            # The node kubeadm init ran on: the dedicated one, else the first GPU node.
            ("control-plane", hostnames(cfg.pools, cfg.control_plane_instance_type)[0]),
            ("gpu-k8s:kubernetesVersion", cfg.kubernetes_version),
            ("gpu-k8s:podCidr", cfg.pod_cidr),
        ]
    return tuple(facts)


def render_facts(facts: tuple[tuple[str, str], ...]) -> str:
    """The FACTS input: ``key=value`` words, in the order given."""
    return " ".join(f"{key}={value}" for key, value in facts)


@dataclass(frozen=True, kw_only=True)
class LifecycleGuardArgs:
    facts: tuple[tuple[str, str], ...]

    def __post_init__(self):
        keys = [k for k, _ in self.facts]
        if not keys or len(set(keys)) != len(keys):
            raise ValueError(f"LifecycleGuardArgs.facts must name distinct keys (got {keys})")
        for key, value in self.facts:
            if not _FACT_KEY.match(key) or not value or any(c.isspace() for c in value):
                raise ValueError(f"LifecycleGuardArgs.facts: {key}={value!r} is not a key and a value without spaces")


class LifecycleGuard(pulumi.ComponentResource):
    check: command.local.Command

    def __init__(self, name: str, args: LifecycleGuardArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:lifecycle:LifecycleGuard", name, {}, opts)
        self.check = command.local.Command(
            f"{name}-guard",
            create=steps.local_script_command(SCRIPT, {"FACTS": render_facts(args.facts)}),
            opts=pulumi.ResourceOptions(parent=self),
        )
        pulumi.runtime.register_stack_transformation(self._after_guard)
        self.register_outputs({"facts": self.check.stdout})
        # Invokes are no resources (no transformation, no depends_on), and the first one that uses
        # the alicloud provider registers it: with a new region, an update of the provider in state
        # that `pulumi destroy` would then follow. So the program itself waits here until the
        # guard's step is done, the way a synchronous invoke waits for its answer; a refused
        # change fails this wait, and the program ends before any lookup.
        _sync_await(self.check.urn.future())

    def _after_guard(self, args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult:
        """Every resource constructed after the guard waits for it (module docstring)."""
        opts = pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(depends_on=[self.check]))
        return pulumi.ResourceTransformationResult(args.props, opts)
