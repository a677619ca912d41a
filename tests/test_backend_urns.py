"""The kubeadm backend keeps every URN it had before the backends existed (issue 14).

A URN change is a replacement on the next `pulumi up` of a running stack (a new URN is a new
resource, the old one is deleted): moving the kubeadm path behind components/backend.py must
not move any resource. The recorded URNs are the plan at commit edc2446. A deliberate change
needs Pulumi aliases for the moved resources, and then a new recording.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_stack

RECORDED = json.loads((Path(__file__).parent / "fixtures" / "kubeadm-urns.json").read_text())["urns"]
# Added since, on purpose (issue 20): the lifecycle guard, created on the next `up` of a running stack.
ADDED = (
    "gpu-k8s:lifecycle:LifecycleGuard::gpu-k8s-lifecycle",
    "gpu-k8s:lifecycle:LifecycleGuard$command:local:Command::gpu-k8s-lifecycle-guard",
)


@pytest.mark.parametrize("stack", sorted(RECORDED))
def test_kubeadm_stacks_keep_their_urns(stack):
    now = {r.urn for r in run_stack(stack).resources}
    assert set(RECORDED[stack]) <= now  # nothing a running stack has is moved or dropped
    assert now - set(RECORDED[stack]) == {f"urn:pulumi:{stack}::gpu-k8s::{tail}" for tail in ADDED}
