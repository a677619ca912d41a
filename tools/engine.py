"""What a second `pulumi up` does: the engine's diff, modelled offline (pure functions).

Given the state a first run left (per URN: type, id, inputs, outputs, resource options,
provider) and what the program registers next, decide per resource what the engine
plans: ``same`` / ``update`` (which inputs) / ``replace`` (which input forced it) /
``create`` / ``delete``. Rules and their sources: ../shared/reference/replacement-semantics.md
(cited below as §n).

- §0: a bridged Terraform provider replaces when a changed argument is ForceNew
  (SDKv2) or RequiresReplace (framework); any other change is an in-place update.
- §2: pulumi-command replaces only on ``triggers``; any other change is an update
  that runs ``create`` again (``update`` is not set in this program). A CopyToRemote's
  update copies only when its asset or ``remotePath`` changed (pulumi-command
  provider/pkg/provider/remote/copyController.go ``Update``: ``needCopy := news.hash() !=
  olds.hash() || news.RemotePath != olds.RemotePath``): a copy whose only change is its
  connection copies nothing (the note says so; tools/mocks.py then fails a step that runs
  where no copy put its script).
- §7: a new SSH public key is a new key pair name (ForceNew, resource_alicloud_ecs_key_pair.go
  l.40-44), and each instance's ``key_name`` update detaches the old key, attaches the new one
  and reboots the instance (resource_alicloud_instance.go l.2441-2519); every remote step's
  connection changes, so each re-runs (commandController.go l.63-83).
- §7: ``alicloud:region`` is not a provider replacement (no ForcesProviderReplace on region:
  pulumi-alicloud provider/resources.go l.378-382; the bridge's DiffConfig, provider.go
  l.841-886): the provider is updated in place and addresses the old region's resources in
  the new one. The program refuses it first (components/lifecycle.py), which the mocks model
  by running its real script.
- §3: pulumi-kubernetes replaces on ``metadata.name``/``metadata.namespace`` for
  every kind, on the Pod spec fields it lists, on DaemonSet ``spec.selector``, on
  ConfigMap ``data``/``binaryData`` and on (Cluster)RoleBinding ``roleRef``;
  NodePatch only on name/namespace. The k8s Provider is replaced when its
  kubeconfig (or context/cluster) changes.
- §5: ``ignore_changes`` keeps the old value of a listed property; ``replace_on_changes``
  turns a change under a listed path into a replace.
- §0: a resource whose explicit provider is replaced (or is another provider) is replaced.

Approximations (kept deliberately simple, and stated so nobody over-reads a result):

- Apply semantics, not preview: the model decides with the values a real ``up`` has
  when it registers each resource (upstream steps already done). A real preview
  shows outputs of replaced/re-run resources as *unknown*; it then also plans a
  replace where a ForceNew input is unknown, and (§3) a replace of the k8s Provider
  whenever its kubeconfig is unknown, i.e. whenever the kubeconfig command re-runs.
  Such preview-only replaces are reported as a ``note``, not as the op.
- Secrets are compared by digest, never by value (the saved plan holds digests only).
- Diff suppression (e.g. alicloud's auto_release_time quirk, §1.3) is not modelled:
  a changed value is a change.
- Delete-before-replace cascades to dependents (§0 ``calculateDependentReplacements``)
  are not modelled; the flag is reported in the note.
- Unknown resource types (none today) update in place on any change.
- ACK types (issue 14): ForceNew from the provider schema; create-only inputs show as an update
  with a "no-op" note (the provider's Update never reads them); delete side effects as notes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SAME, UPDATE, REPLACE, CREATE, DELETE = "same", "update", "replace", "create", "delete"
OPS = (SAME, UPDATE, REPLACE, CREATE, DELETE)

COMMAND_TYPES = ("command:remote:Command", "command:local:Command", "command:remote:CopyToRemote")
K8S_PROVIDER = "pulumi:providers:kubernetes"

# Bridged alicloud/tls/random: the arguments whose change replaces (ForceNew/RequiresReplace).
FORCE_NEW: dict[str, frozenset[str]] = {
    "alicloud:vpc/switch:Switch": frozenset({"cidrBlock", "vpcId", "zoneId"}),  # §1.1
    "alicloud:ecs/securityGroup:SecurityGroup": frozenset({"vpcId"}),
    "alicloud:ecs/ecsKeyPair:EcsKeyPair": frozenset({"keyPairName"}),
    "alicloud:ecs/instance:Instance": frozenset(
        {"spotStrategy", "spotPriceLimit", "systemDiskCategory", "availabilityZone"}  # §1.2
    ),
    "tls:index/privateKey:PrivateKey": frozenset({"algorithm", "rsaBits", "ecdsaCurve"}),  # §4
    # ACK (issue 14). [TFA] = aliyun/terraform-provider-alicloud @81c43b6 (v1.289.0+8, 2026-08-21),
    # alicloud/resource_alicloud_cs_managed_kubernetes.go schema: profile l.54, pod_cidr l.235,
    # service_cidr l.240, node_cidr_mask l.245, proxy_mode l.317, ip_stack l.324, cluster_domain l.399,
    # service_account_issuer l.661, api_audiences l.666, auto_mode l.785 (ForceNew). Everything else
    # updates in place (Update l.1455-1509) or is create-only (UPDATE_NOTES below). pulumi-alicloud 4.0.0
    # may bridge a newer upstream (its docstrings say "since v1.295.0"): unverified against 4.0.0.
    "alicloud:cs/managedKubernetes:ManagedKubernetes": frozenset(
        {
            "profile",
            "podCidr",
            "serviceCidr",
            "nodeCidrMask",
            "proxyMode",
            "ipStack",
            "clusterDomain",
            "serviceAccountIssuer",
            "apiAudiences",
            "autoMode",
        }
    ),
    # [TFA] resource_alicloud_cs_kubernetes_node_pool.go schema: auto_mode l.38, cis_enabled l.65,
    # cluster_id l.71, deployment_set_id l.153, instance_metadata_options l.206, login_as_non_root l.542,
    # node_name_mode l.648, ram_role_name l.718, security_group_id l.829, security_group_ids l.836,
    # security_hardening_os l.843, soc_enabled l.848, tee_config l.950, type l.966. desired_size,
    # instance_types, labels, taints, vswitch_ids, system disk, spot and image settings are updates
    # (Update l.2431-3498: ModifyClusterNodePool PUT at l.3120; node_config PUT l.3345; upgrade l.3452).
    "alicloud:cs/nodePool:NodePool": frozenset(
        {
            "autoMode",
            "cisEnabled",
            "clusterId",
            "deploymentSetId",
            "instanceMetadataOptions",
            "loginAsNonRoot",
            "nodeNameMode",
            "ramRoleName",
            "securityGroupId",
            "securityGroupIds",
            "securityHardeningOs",
            "socEnabled",
            "teeConfig",
            "type",
        }
    ),
    # [TFA] resource_alicloud_ess_scheduled_task.go: no ForceNew argument (schema l.21-86); every
    # change is one ModifyScheduledTask (Update l.145-204), including scaling_group_id and launch_time.
    "alicloud:ess/scheduledTask:ScheduledTask": frozenset(),
}
# Every argument replaces except these (SG rule: all but description, §1.1; random: §4).
FORCE_NEW_EXCEPT: dict[str, frozenset[str]] = {
    "alicloud:ecs/securityGroupRule:SecurityGroupRule": frozenset({"description"}),
    "random:index/randomString:RandomString": frozenset(),
    "random:index/randomPassword:RandomPassword": frozenset(),
}

# §3: Pod spec fields and container fields whose change replaces the pod.
POD_SPEC_FORCE_NEW = frozenset(
    [
        "affinity",
        "automountServiceAccountToken",
        "dnsConfig",
        "dnsPolicy",
        "enableServiceLinks",
        "hostAliases",
        "hostIPC",
        "hostNetwork",
        "hostPID",
        "hostname",
        "imagePullSecrets",
        "nodeName",
        "nodeSelector",
        "overhead",
        "preemptionPolicy",
        "priority",
        "priorityClassName",
        "readinessGates",
        "restartPolicy",
        "runtimeClassName",
        "schedulerName",
        "securityContext",
        "serviceAccount",
        "serviceAccountName",
        "shareProcessNamespace",
        "subdomain",
        "terminationGracePeriodSeconds",
        "volumes",
    ]
)
CONTAINER_FORCE_NEW = frozenset(
    [
        "args",
        "command",
        "env",
        "image",
        "imagePullPolicy",
        "lifecycle",
        "livenessProbe",
        "readinessProbe",
        "ports",
        "resources",
        "securityContext",
        "stdin",
        "stdinOnce",
        "terminationMessagePath",
        "terminationMessagePolicy",
        "tty",
        "volumeDevices",
        "volumeMounts",
        "workingDir",
    ]
)

# In-place updates that are not harmless: said next to the op (§1.1, §1.2).
UPDATE_NOTES: dict[str, dict[str, str]] = {
    "alicloud:ecs/instance:Instance": {
        "imageId": "DESTRUCTIVE: in-place ReplaceSystemDisk wipes the node's system disk (driver, kubelet, etcd); "
        "the remote steps do not re-run",
        "instanceType": "stops and starts the instance",
        "hostName": "stops and starts the instance",
        "vswitchId": "stops and starts the instance",
        "keyName": "reboots the instance",
    },
    "alicloud:ecs/ecsKeyPair:EcsKeyPair": {
        "publicKey": "no-op: ECS keeps the old public key while state shows the new one",
    },
    # [TFA] resource_alicloud_cs_managed_kubernetes.go Update l.1455-1509 (ModifyCluster: modifyCluster in
    # resource_alicloud_cs_kubernetes.go l.965-1110; MigrateCluster l.932-962; UpgradeCluster l.1511-1591).
    # "no-op" rows: not ForceNew and never read by Update, so the plan shows an update that changes nothing
    # (the SDK docstrings say "Only works for Create" for addons, new_nat_gateway, slb_internet_enabled).
    "alicloud:cs/managedKubernetes:ManagedKubernetes": {
        "addons": "no-op: only read at create (use cs.KubernetesAddon to change add-ons later)",
        "newNatGateway": "no-op: only read at create",
        "slbInternetEnabled": "no-op: only read at create (the API server SLB stays as created)",
        "zoneIds": "no-op: only read at create",
        "podVswitchIds": "no-op: only read at create",
        "isEnterpriseSecurityGroup": "no-op: only read at create",
        "userCa": "no-op: never sent by create or update",
        "namePrefix": "no-op: listed in Update but modifyCluster ignores it",
        "clusterSpec": "MigrateCluster only from ack.standard to ack.pro.*; any other change is a no-op",
        "version": "UpgradeCluster in place (master_only from upgrade_policy.control_plane_only); ACK refuses "
        "downgrades (SDK docstring)",
        "vswitchIds": "ModifyCluster: the control plane restarts",
        "securityGroupId": "ModifyCluster: the control plane restarts briefly",
        "timezone": "ModifyCluster: control plane restarts briefly; existing nodes keep the old timezone",
        "deleteOptions": "state only: read at delete, so `up` before `destroy` for it to apply",
        "retainResources": "state only: read at delete, so `up` before `destroy` for it to apply",
        "upgradePolicy": "state only: read with a version change",
    },
    # [TFA] resource_alicloud_cs_kubernetes_node_pool.go Update l.2431-3498: ModifyClusterNodePool (l.3120)
    # (scaling_group / kubernetes_config / nodepool_info); Read l.1940+ reads desired_size back.
    "alicloud:cs/nodePool:NodePool": {
        "desiredSize": "scales the pool to the new size (ModifyClusterNodePool)",
        "instanceTypes": "scaling configuration only: nodes already running keep their type (inference)",
        "labels": "new nodes only unless update_nodes is true (SDK docstring of update_nodes)",
        "taints": "new nodes only unless update_nodes is true (SDK docstring of update_nodes)",
        "imageType": "scaling configuration only: nodes already running keep their image (inference)",
        "updateNodes": "no-op alone: read only with another change (SDK docstring)",
        "forceDelete": "state only: read at delete",
    },
    # [TFA] resource_alicloud_ess_scheduled_task.go Update l.145-204.
    "alicloud:ess/scheduledTask:ScheduledTask": {
        "launchTime": "ModifyScheduledTask moves the run; must be in the future and at most 90 days ahead (SDK)",
    },
}

# What a delete of these types does besides removing the resource (shown next to the delete op).
DELETE_NOTES: dict[str, str] = {
    # [TFA] resource_alicloud_cs_kubernetes.go resourceAlicloudCSKubernetesDelete l.1344-1395 (DeleteCluster
    # with retain_resources/delete_options); what it removes: the SDK docstring of retain_resources and
    # ACK's "Delete a cluster" page (node pools are deleted in turn, pay-as-you-go nodes released).
    "alicloud:cs/managedKubernetes:ManagedKubernetes": "DeleteCluster also deletes what the cluster created "
    "(NAT gateway, SNAT entries, API server SLB, RAM role) unless retain_resources; SLS projects are kept "
    "by default (delete_options); blocked while deletion_protection is true (ACK delete page)",
    # [TFA] resource_alicloud_cs_kubernetes_node_pool.go Delete l.3500-3545: force=true unless force_delete=false.
    # Release rule from ACK's "Delete a cluster" page for a pool with a desired size (unverified for a pool
    # deleted on its own).
    "alicloud:cs/nodePool:NodePool": "DeleteClusterNodepool (force): its pay-as-you-go nodes and their system disks are released",
}

_PATH_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class State:
    """One resource as the engine knows it: what was (or is being) registered."""

    urn: str
    type: str
    name: str
    id: str = ""
    inputs: Mapping = field(default_factory=dict)  # comparable form: secrets as digests
    outputs: Mapping = field(default_factory=dict)
    provider: str = ""  # explicit provider reference "urn::id", "" for the default one
    options: Mapping = field(default_factory=dict)  # ignoreChanges, replaceOnChanges, deleteBeforeReplace, ...
    # What its connection input depends on (the engine keeps property dependencies in state):
    # the instance a remote command or copy reaches (tools/mocks.py host_files).
    connection_dependencies: tuple[str, ...] = ()


@dataclass(frozen=True)
class Change:
    urn: str
    type: str
    name: str
    op: str
    keys: tuple[str, ...] = ()
    note: str = ""

    def as_dict(self) -> dict:
        out = {"urn": self.urn, "op": self.op, "keys": list(self.keys)}
        if self.note:
            out["note"] = self.note
        return out


def split_path(path: str) -> tuple[str | int, ...]:
    """'spec.containers[0].image' -> ('spec', 'containers', 0, 'image')."""
    return tuple(name if name else int(index) for name, index in _PATH_TOKEN.findall(path))


def join_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def changed_paths(old: object, new: object, prefix: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys/indexes) where ``old`` and ``new`` differ; [] when equal."""
    if old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        paths: list[tuple] = []
        for key in sorted(set(old) | set(new), key=str):
            if key not in old or key not in new:
                paths.append((*prefix, key))
            else:
                paths += changed_paths(old[key], new[key], (*prefix, key))
        return paths
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        paths = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            paths += changed_paths(a, b, (*prefix, i))
        return paths
    return [prefix]


def _has(value: object, part: str | int) -> bool:
    if isinstance(value, Mapping):
        return part in value
    return isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)


def _get(value: object, path: Sequence) -> tuple[bool, object]:
    for part in path:
        if not _has(value, part):
            return False, None
        value = value[part]
    return True, value


def _set(value: dict, path: Sequence, new: object, present: bool) -> None:
    *head, last = path
    for part in head:
        if not _has(value, part):
            return
        value = value[part]
    if isinstance(value, dict):
        if present:
            value[last] = new
        else:
            value.pop(last, None)
    elif isinstance(value, list) and isinstance(last, int) and 0 <= last < len(value) and present:
        value[last] = new


def _copy(value: object) -> object:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def apply_ignore_changes(old: Mapping, new: Mapping, ignore: Iterable[str]) -> dict:
    """``new`` with the old value at every ignored path (§5: they can cause no diff)."""
    out = _copy(new)
    for path in ignore:
        parts = split_path(path)
        if parts:
            present, value = _get(old, parts)
            _set(out, parts, _copy(value), present)
    return out


def _under(path: tuple, prefix: tuple) -> bool:
    return len(path) >= len(prefix) and tuple(path[: len(prefix)]) == tuple(prefix)


def forces_replace(type_: str, path: tuple) -> bool:
    """Whether the provider itself plans a replace for a change at ``path``."""
    if not path:
        return False
    top = path[0]
    if type_ in COMMAND_TYPES:
        return top == "triggers"
    if type_ in FORCE_NEW:
        return top in FORCE_NEW[type_]
    if type_ in FORCE_NEW_EXCEPT:
        return top not in FORCE_NEW_EXCEPT[type_]
    if type_ == K8S_PROVIDER:
        return top in ("kubeconfig", "context", "cluster")
    if type_.startswith("kubernetes:"):
        if path[:2] in (("metadata", "name"), ("metadata", "namespace")):
            return True
        kind = type_.rsplit(":", 1)[-1]
        if kind == "Pod" and top == "spec" and len(path) > 1:
            if path[1] in POD_SPEC_FORCE_NEW:
                return True
            return path[1] in ("containers", "initContainers") and len(path) > 3 and path[3] in CONTAINER_FORCE_NEW
        if kind == "DaemonSet":
            return path[:2] == ("spec", "selector")
        if kind == "ConfigMap":
            return top in ("data", "binaryData")
        if kind in ("ClusterRoleBinding", "RoleBinding"):
            return top == "roleRef"
    return False


def _key(type_: str, path: tuple) -> str:
    """How a changed path is reported: the input name (two levels for Kubernetes objects)."""
    depth = 2 if type_.startswith("kubernetes:") and type_ != K8S_PROVIDER else 1
    return join_path(path[:depth]) or "(whole object)"


def _keys(type_: str, paths: Iterable[tuple]) -> tuple[str, ...]:
    return tuple(sorted({_key(type_, p) for p in paths}))


def diff_resource(old: State | None, new: State, *, provider_replaced: bool = False) -> Change:
    """The engine's plan for one registered resource, given its previous state (or None)."""
    if old is None:
        return Change(new.urn, new.type, new.name, CREATE)
    dbr = " (deleted first: delete_before_replace)" if new.options.get("deleteBeforeReplace") else ""
    if old.type != new.type:
        return Change(new.urn, new.type, new.name, REPLACE, ("type",), "type changed" + dbr)
    if provider_replaced or (old.provider != new.provider and old.provider and new.provider):
        return Change(new.urn, new.type, new.name, REPLACE, ("provider",), "its provider is replaced" + dbr)
    ignored = list(new.options.get("ignoreChanges") or [])
    inputs = apply_ignore_changes(old.inputs, new.inputs, ignored)
    paths = changed_paths(dict(old.inputs), inputs)
    if not paths:
        return Change(new.urn, new.type, new.name, SAME)
    listed = [split_path(p) for p in new.options.get("replaceOnChanges") or []]
    forced = [p for p in paths if forces_replace(new.type, p) or any(_under(p, prefix) for prefix in listed)]
    if forced:
        return Change(new.urn, new.type, new.name, REPLACE, _keys(new.type, forced), dbr.strip(" ()"))
    keys = _keys(new.type, paths)
    notes = [UPDATE_NOTES.get(new.type, {}).get(k, "") for k in keys]
    if new.type in COMMAND_TYPES and new.type != "command:remote:CopyToRemote":
        notes.append("runs the command again")
    if new.type == "command:remote:CopyToRemote" and not {"source", "remotePath"} & set(keys):
        notes.append("copies nothing: an update copies only a new asset or path (copyController.go Update)")
    return Change(new.urn, new.type, new.name, UPDATE, keys, "; ".join(n for n in notes if n))


def diff_states(previous: Sequence[State], current: Sequence[State]) -> list[Change]:
    """Every resource of either side once: the current ones in registration order, then deletes.

    Providers register before the resources that use them, so a replaced provider is
    known when its resources are diffed (§0 ``providerChanged``).
    """
    before = {s.urn: s for s in previous}
    now = {s.urn for s in current}
    changes: list[Change] = []
    replaced: set[str] = set()
    for state in current:
        provider_urn = state.provider.rsplit("::", 1)[0] if state.provider else ""
        change = diff_resource(before.get(state.urn), state, provider_replaced=provider_urn in replaced)
        if change.op == REPLACE and state.type.startswith("pulumi:providers:"):
            replaced.add(state.urn)
        changes.append(change)
    for state in previous:
        if state.urn not in now:
            note = "retained in the cloud (retain_on_delete)" if state.options.get("retainOnDelete") else ""
            note = note or DELETE_NOTES.get(state.type, "")
            changes.append(Change(state.urn, state.type, state.name, DELETE, (), note))
    return changes


def summary(changes: Iterable[Change]) -> dict[str, int]:
    counts = dict.fromkeys(OPS, 0)
    for c in changes:
        counts[c.op] += 1
    return counts
