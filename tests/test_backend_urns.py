"""Every URN a running stack has stays: a changed URN is a delete and a create on the next `up`.

Two records: the kubeadm stacks at commit edc2446, before the cluster backends existed (issue
14), and every shipped stack after the day-2 fixes, before the layout redesign (issue 21).
Resources may be added (they are created on the next `up`); none may move or go. A deliberate
move needs Pulumi aliases for the moved resources, and then a new record.
"""

from __future__ import annotations

import json

import pytest
from helpers import FIXTURES, shipped

BEFORE_BACKENDS = json.loads((FIXTURES / "kubeadm-urns.json").read_text())["urns"]
BEFORE_REDESIGN = json.loads((FIXTURES / "stack-urns.json").read_text())["urns"]
# Added since the first record, on purpose (issue 20): the lifecycle guard.
GUARD = (
    "gpu-k8s:lifecycle:LifecycleGuard::gpu-k8s-lifecycle",
    "gpu-k8s:lifecycle:LifecycleGuard$command:local:Command::gpu-k8s-lifecycle-guard",
)


@pytest.mark.parametrize("stack", sorted(BEFORE_BACKENDS))
def test_kubeadm_stacks_keep_their_urns_from_before_the_backends(stack):
    now = {r.urn for r in shipped(stack).resources}
    assert set(BEFORE_BACKENDS[stack]) <= now
    assert {f"urn:pulumi:{stack}::gpu-k8s::{tail}" for tail in GUARD} <= now


@pytest.mark.parametrize("stack", sorted(BEFORE_REDESIGN))
def test_every_shipped_stack_keeps_its_urns_from_before_the_redesign(stack):
    missing = set(BEFORE_REDESIGN[stack]) - {r.urn for r in shipped(stack).resources}
    assert not missing, sorted(missing)[:5]
