"""gpu-k8s policy rules as pure functions: (resource_type, props) -> violation messages.

No Pulumi engine is needed to call them: ``props`` is any Mapping of the resource's
inputs in the engine's camelCase (``instanceType``, ``cidrIp``, ...). An empty list
means compliant.

Unknown values. During ``pulumi preview`` an input computed from another resource's
output is unknown. The engine hands policies a proxy whose item access raises
``UnknownValueError`` for such a value (and the framework then skips the whole
policy with a "can't run policy during preview" note); the test harness instead holds
the raw sentinel string. ``_get`` turns both into the one marker ``UNKNOWN`` so each
rule decides what "not known yet" means for it, instead of the policy being skipped:

* an unknown ``autoReleaseTime`` is being set (to a value computed at apply time), so
  rule 1 is satisfied; this stack's release time comes from a local command's stdout
  and is unknown on the first preview of every stack;
* any other unknown that the verdict depends on gives no message at preview. The
  engine runs the policies again during ``pulumi up`` on the resolved inputs, before
  the resource is created, so nothing slips through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

from components.facts import catalog

INSTANCE = "alicloud:ecs/instance:Instance"
NODE_POOL = "alicloud:cs/nodePool:NodePool"  # the ACK backend's GPU nodes
SCHEDULED_TASK = "alicloud:ess/scheduledTask:ScheduledTask"  # the ACK backend's TTL (components/ack/backend.py)
SECURITY_GROUP_RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"

# Ports that must never face the whole internet: SSH and the Kubernetes API server.
ADMIN_PORTS: dict[int, str] = {22: "SSH", 6443: "Kubernetes API"}

# Tags the program puts on every node (components/aliyun/node.py).
ROLE_TAG, POOL_TAG = "gpu-k8s-role", "gpu-k8s-pool"
CONTROL_PLANE_POOL = "control-plane"

_SENTINELS = frozenset(
    {
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    }
)


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""A value that the engine will only know at apply time."""


def _get(props: Any, key: str) -> Any:
    """props[key], None when absent, UNKNOWN when not known during preview."""
    if props is UNKNOWN:
        return UNKNOWN
    if not isinstance(props, Mapping):
        return None
    try:
        value = props.get(key)
    except UnknownValueError:
        return UNKNOWN
    if isinstance(value, str) and value in _SENTINELS:
        return UNKNOWN
    return value


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _gpu_profile(instance_type: Any) -> catalog.GpuProfile | None:
    """The catalog's profile for a GPU type; None for anything else (non-GPU, malformed)."""
    if not isinstance(instance_type, str):
        return None
    try:
        return catalog.profile_for(instance_type)
    except catalog.UnknownInstanceType:
        return None


def check_gpu_instance_auto_release(resource_type: str, props: Mapping) -> list[str]:
    """Mandatory: a pay-as-you-go GPU instance must carry an auto-release time."""
    if resource_type != INSTANCE:
        return []
    charge = _get(props, "instanceChargeType")
    instance_type = _get(props, "instanceType")
    release = _get(props, "autoReleaseTime")
    if UNKNOWN in (charge, instance_type) or release is UNKNOWN:
        return []
    # The provider's default charge type is PostPaid (absent counts as pay-as-you-go).
    if charge is not None and _text(charge).lower() != "postpaid":
        return []
    if _gpu_profile(instance_type) is None or _text(release):
        return []
    return [
        f"pay-as-you-go GPU instance {instance_type} has no auto-release time: "
        "a forgotten stack bills by the hour; set gpu-k8s:ttlHours"
    ]


def _is_world(cidr: Any) -> bool:
    """True for a /0 network (0.0.0.0/0, ::/0, and spellings such as 0.0.0.0/0.0.0.0)."""
    text = _text(cidr)
    if not text:
        return False
    try:
        return ipaddress.ip_network(text, strict=False).prefixlen == 0
    except ValueError:
        return False


def _covered_ports(protocol: Any, port_range: Any) -> list[int] | None:
    """Admin ports the rule opens; None when it cannot be decided yet (unknowns)."""
    if UNKNOWN in (protocol, port_range):
        return None
    proto = _text(protocol).lower() or "tcp"  # ip_protocol is required; be strict if absent
    if proto == "all":
        return sorted(ADMIN_PORTS)
    if proto != "tcp":
        return []  # SSH and the API server listen on TCP only
    text = _text(port_range)
    if not text:
        return sorted(ADMIN_PORTS)  # no range: the provider's default is -1/-1, every port
    try:
        low, high = (int(part) for part in text.split("/"))
    except ValueError:
        return sorted(ADMIN_PORTS)  # unparseable: assume the worst for a mandatory rule
    if low == -1 and high == -1:
        return sorted(ADMIN_PORTS)  # -1/-1: every port
    return [port for port in sorted(ADMIN_PORTS) if low <= port <= high]


def check_no_world_open_admin_ports(resource_type: str, props: Mapping) -> list[str]:
    """Mandatory: no ingress accept rule opens 22 or 6443 to 0.0.0.0/0 or ::/0."""
    if resource_type != SECURITY_GROUP_RULE:
        return []
    direction = _get(props, "type")
    policy = _get(props, "policy")
    if direction is UNKNOWN or _text(direction).lower() != "ingress":
        return []
    if policy is UNKNOWN or _text(policy).lower() == "drop":
        return []  # a drop rule closes ports; it cannot open them
    cidrs = [_get(props, "cidrIp"), _get(props, "ipv6CidrIp")]
    world = [c.strip() for c in cidrs if c is not UNKNOWN and _is_world(c)]
    if not world:
        return []
    ports = _covered_ports(_get(props, "ipProtocol"), _get(props, "portRange"))
    if not ports:
        return []
    named = ", ".join(f"{port} ({ADMIN_PORTS[port]})" for port in ports)
    return [
        f"ingress rule opens {named} to {' and '.join(world)} "
        f"(ipProtocol {_text(_get(props, 'ipProtocol')) or 'tcp'}, portRange {_text(_get(props, 'portRange')) or '-1/-1'}): "
        'restrict gpu-k8s:allowedCidrs to your own address, e.g. 203.0.113.7/32 or "auto"'
    ]


def _supported() -> str:
    return ", ".join(catalog.supported_families())


def _node_pool_types(props: Mapping) -> list[str]:
    """Advisory, ACK node pools: GPU compute types the catalog knows (ACK runs no vGPU family)."""
    types = _get(props, "instanceTypes")
    if types is UNKNOWN or not isinstance(types, list | tuple):
        return []
    messages = []
    for instance_type in types:
        if _get({"t": instance_type}, "t") is UNKNOWN:  # a sentinel string inside the list
            continue
        profile = _gpu_profile(instance_type)
        if profile is None:
            messages.append(f"node pool type {instance_type} is not a GPU instance type: its nodes get no GPU")
        elif profile.driver != catalog.TESLA:
            messages.append(
                f"node pool type {instance_type} is a vGPU family ({profile.family}): ACK installs datacenter drivers only"
            )
        elif not profile.known_family:
            messages.append(
                f"node pool type {instance_type} is of family {profile.family}, which the gpu-k8s catalog does not know; "
                f"supported families: {_supported()}"
            )
    return messages


def check_instance_type_in_catalog(resource_type: str, props: Mapping) -> list[str]:
    """Advisory: GPU nodes should use a family the catalog knows (driver, GPU name, memory)."""
    if resource_type == NODE_POOL:
        return _node_pool_types(props)
    if resource_type != INSTANCE:
        return []
    instance_type = _get(props, "instanceType")
    if instance_type is UNKNOWN:
        return []
    profile = _gpu_profile(instance_type)
    if profile is not None:
        if profile.known_family:
            return []
        return [
            f"GPU instance type {instance_type} is of family {profile.family}, which the gpu-k8s catalog does not know: "
            f"the driver is guessed from the name and the GPU model, memory and price are unknown; "
            f"supported families: {_supported()}"
        ]
    tags = _get(props, "tags")
    role, pool = _get(tags, ROLE_TAG), _get(tags, POOL_TAG)
    if UNKNOWN in (role, pool) or role is None or pool == CONTROL_PLANE_POOL:
        return []
    return [
        f"instance {instance_type} is tagged as a GPU node ({POOL_TAG}={pool}, {ROLE_TAG}={role}) "
        f"but is not a GPU instance type: it gets no GPU driver and no GPU; supported families: {_supported()}"
    ]


def check_node_pools_scale_to_zero(resources: list[tuple[str, str, Mapping]]) -> list[tuple[str, str]]:
    """Stack rule, ACK: every node pool's scaling group has a scale-to-zero task.

    ACK node pools have no per-instance auto-release (their scaling group replaces a
    released instance), so the TTL is an ESS scheduled task that sets the group to 0
    (components/ack/backend.py). ``resources``: (type, urn, props) of the whole stack, props with
    the outputs (``scalingGroupId`` of a pool). An unknown group (preview) is not judged.
    Returns (message, urn) pairs.
    """
    tasks = {
        _get(props, "scalingGroupId")
        for type_, _, props in resources
        if type_ == SCHEDULED_TASK and _get(props, "desiredCapacity") in (0, 0.0, "0") and _get(props, "taskEnabled") is not False
    }
    found = []
    for type_, urn, props in resources:
        if type_ != NODE_POOL:
            continue
        group = _get(props, "scalingGroupId")
        if group is UNKNOWN or group is None or group in tasks or UNKNOWN in tasks:
            continue
        found.append(
            (
                f"ACK node pool {_get(props, 'nodePoolName')} has no scale-to-zero task on its scaling group "
                "(gpu-k8s:ttlHours 0?): its GPU nodes bill until `make down`",
                urn,
            )
        )
    return found


# Whole-stack rules (policy/__main__.py StackValidationPolicy): name -> rule.
STACK_RULES = {"gpu-node-pool-needs-scale-to-zero": check_node_pools_scale_to_zero}

# name -> rule, in the order the pack lists them (policy/__main__.py).
RULES = {
    "gpu-instance-needs-auto-release": check_gpu_instance_auto_release,
    "no-world-open-admin-ports": check_no_world_open_admin_ports,
    "instance-type-in-catalog": check_instance_type_in_catalog,
}
