"""The gpu-k8s-safety policy pack: `pulumi preview -s dev --policy-pack policy`.

How this file is run. The Pulumi CLI starts the pack's Python with
``python -m pulumi.policy <engine> <pack dir>``, which runs this file through
``runpy.run_path`` with ``__name__ == "__main__"``. ``PolicyPack(...)`` then starts the
analyzer's gRPC server and blocks forever, so it is only called under that guard. The
tests import this file as the module ``policy.__main__`` (``__name__`` is not
``"__main__"``), get the same policy objects from ``policies()`` and start nothing.

Imports. The rules (policy/rules.py) read the instance catalog from the program's own
``components/facts/catalog.py`` in the repository root, the parent of this directory. The
root is put on sys.path (the CLI only adds this pack directory), then both the CLI and
the tests import the rules the same way, as ``policy.rules``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

_REPO_ROOT = Path(__file__).resolve().parent.parent
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from policy import rules  # noqa: E402 - needs the repo root on sys.path first

PACK_NAME = "gpu-k8s-safety"

Rule = Callable[[str, Mapping], list[str]]


def _validate(rule: Rule):
    """Adapt a pure rule to the policy SDK: every message becomes a violation of this resource."""

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule(args.resource_type, args.props):
            report_violation(message, None)

    validate.__name__ = f"validate_{rule.__name__}"
    return validate


def _validate_stack(rule):
    """Adapt a pure whole-stack rule: each (message, urn) becomes a violation of that resource."""

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        for message, urn in rule([(r.resource_type, r.urn, r.props) for r in args.resources]):
            report_violation(message, urn)

    validate.__name__ = f"validate_{rule.__name__}"
    return validate


def policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    """The pack's policies (no engine needed to build them)."""
    return [
        ResourceValidationPolicy(
            name="gpu-instance-needs-auto-release",
            description=(
                "Pay-as-you-go GPU ECS instances must have an auto-release time (gpu-k8s:ttlHours), "
                "so a forgotten stack stops billing by itself."
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validate(rules.check_gpu_instance_auto_release),
        ),
        ResourceValidationPolicy(
            name="no-world-open-admin-ports",
            description="No ingress security-group rule may open SSH (22) or the Kubernetes API (6443) to 0.0.0.0/0 or ::/0.",
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validate(rules.check_no_world_open_admin_ports),
        ),
        ResourceValidationPolicy(
            name="instance-type-in-catalog",
            description=(
                "GPU nodes should use an instance family the gpu-k8s catalog knows "
                "(driver kind, GPU model, memory), and nodes tagged as GPU nodes should be GPU types."
            ),
            enforcement_level=EnforcementLevel.ADVISORY,
            validate=_validate(rules.check_instance_type_in_catalog),
        ),
        StackValidationPolicy(
            name="gpu-node-pool-needs-scale-to-zero",
            description=(
                "ACK GPU node pools must have a scale-to-zero task (gpu-k8s:ttlHours), the node pools' "
                "auto-release, so a forgotten stack stops billing for its GPU nodes by itself."
            ),
            enforcement_level=EnforcementLevel.MANDATORY,
            validate=_validate_stack(rules.check_node_pools_scale_to_zero),
        ),
    ]


if __name__ == "__main__":
    PolicyPack(name=PACK_NAME, policies=policies(), enforcement_level=EnforcementLevel.ADVISORY)
