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


@pytest.mark.parametrize("stack", sorted(RECORDED))
def test_kubeadm_stacks_keep_their_urns(stack):
    assert sorted(r.urn for r in run_stack(stack).resources) == RECORDED[stack]
