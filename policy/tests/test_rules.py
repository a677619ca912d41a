"""The policy pack's rules, without the Pulumi CLI: pure functions on camelCase inputs."""

from __future__ import annotations

import importlib
import select
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc
from pulumi_policy import EnforcementLevel, ResourceValidationArgs
from pulumi_policy.proxy import UNKNOWN_OBJECT_VALUE, UNKNOWN_STRING_VALUE, unknown_checking_proxy

from components.facts import catalog
from policy import rules
from tests.helpers import shipped  # tests/ is not on the path when policy/tests runs alone
from tools.harness import run_program

INSTANCE = rules.INSTANCE
RULE = rules.SECURITY_GROUP_RULE
ALL_RULES = list(rules.RULES.values())
PACK_DIR = Path(rules.__file__).resolve().parent


def instance(**overrides: object) -> dict:
    """An Instance's inputs as the program sends them (stacks/Pulumi.dev.yaml), compliant."""
    props: dict = {
        "instanceType": "ecs.sgn7i-vws-m2s.xlarge",
        "instanceChargeType": "PostPaid",
        "spotStrategy": "NoSpot",
        "autoReleaseTime": "2026-11-29T01:33:00Z",
        "tags": {"managed-by": "gpu-k8s", "gpu-k8s-pool": "gpu", "gpu-k8s-role": "control-plane"},
    }
    props.update(overrides)
    return {k: v for k, v in props.items() if v is not None}


def sg_rule(**overrides: object) -> dict:
    props: dict = {
        "type": "ingress",
        "ipProtocol": "tcp",
        "portRange": "22/22",
        "cidrIp": "198.51.100.7/32",
        "policy": "accept",
        "nicType": "intranet",
        "priority": 1,
    }
    props.update(overrides)
    return {k: v for k, v in props.items() if v is not None}


# --- gpu-instance-needs-auto-release -------------------------------------------------


@pytest.mark.parametrize(
    "props",
    [
        pytest.param(instance(autoReleaseTime=None), id="no-autoReleaseTime"),
        pytest.param(instance(autoReleaseTime=""), id="empty-autoReleaseTime"),
        pytest.param(instance(autoReleaseTime="  "), id="blank-autoReleaseTime"),
        pytest.param(instance(autoReleaseTime=None, instanceChargeType=None), id="charge-type-absent"),
        pytest.param(instance(autoReleaseTime=None, instanceType="ecs.gn5i-c2g1.large"), id="compute-p4"),
        pytest.param(instance(autoReleaseTime=None, instanceType="ecs.gn7s-c8g1.2xlarge"), id="gpu-not-in-catalog"),
        pytest.param(instance(autoReleaseTime=None, spotStrategy="SpotAsPriceGo"), id="spot"),
    ],
)
def test_auto_release_fires(props):
    assert rules.check_gpu_instance_auto_release(INSTANCE, props) == [
        f"pay-as-you-go GPU instance {props['instanceType']} has no auto-release time: "
        "a forgotten stack bills by the hour; set gpu-k8s:ttlHours"
    ]


@pytest.mark.parametrize(
    "resource_type,props",
    [
        pytest.param(INSTANCE, instance(), id="auto-release-set"),
        pytest.param(INSTANCE, instance(autoReleaseTime=None, instanceChargeType="PrePaid"), id="prepaid"),
        pytest.param(INSTANCE, instance(autoReleaseTime=None, instanceType="ecs.g7.large"), id="non-gpu"),
        pytest.param(INSTANCE, instance(autoReleaseTime=None, instanceType="not-a-type"), id="malformed-type"),
        pytest.param(INSTANCE, instance(autoReleaseTime=UNKNOWN_STRING_VALUE), id="release-unknown-at-preview"),
        pytest.param(INSTANCE, instance(autoReleaseTime=None, instanceType=UNKNOWN_STRING_VALUE), id="type-unknown"),
        pytest.param(RULE, instance(autoReleaseTime=None), id="other-resource-type"),
    ],
)
def test_auto_release_silent(resource_type, props):
    assert rules.check_gpu_instance_auto_release(resource_type, props) == []


# --- no-world-open-admin-ports -------------------------------------------------------


@pytest.mark.parametrize(
    "props,ports",
    [
        pytest.param(sg_rule(cidrIp="0.0.0.0/0"), ["22"], id="ssh"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange="6443/6443"), ["6443"], id="kube-api"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange="1/65535"), ["22", "6443"], id="whole-range"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange="6000/7000"), ["6443"], id="range-around-6443"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", ipProtocol="all", portRange="-1/-1"), ["22", "6443"], id="all"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange="-1/-1"), ["22", "6443"], id="tcp-any-port"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange=None), ["22", "6443"], id="tcp-no-range"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", portRange="ssh"), ["22", "6443"], id="unparseable-range"),
        pytest.param(sg_rule(cidrIp=None, ipv6CidrIp="::/0"), ["22"], id="ipv6-world"),
        pytest.param(sg_rule(cidrIp="::/0", portRange="6443/6443"), ["6443"], id="ipv6-world-in-cidrIp"),
        pytest.param(sg_rule(cidrIp="0.0.0.0/0", policy=None, type="Ingress", ipProtocol="TCP"), ["22"], id="case"),
    ],
)
def test_world_open_fires(props, ports):
    messages = rules.check_no_world_open_admin_ports(RULE, props)
    assert len(messages) == 1
    named = [p for p in ("22", "6443") if f"{p} (" in messages[0]]
    assert named == ports
    assert "/0" in messages[0]


@pytest.mark.parametrize(
    "resource_type,props",
    [
        pytest.param(RULE, sg_rule(), id="ssh-from-/32"),
        pytest.param(RULE, sg_rule(portRange="6443/6443"), id="kube-api-from-/32"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", portRange="80/80"), id="http-to-world"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", portRange="30000/32767"), id="nodeports-to-world"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", ipProtocol="udp", portRange="1/65535"), id="udp"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", ipProtocol="icmp", portRange="-1/-1"), id="icmp"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", type="egress"), id="egress"),
        pytest.param(RULE, sg_rule(cidrIp="0.0.0.0/0", policy="drop"), id="drop-rule"),
        pytest.param(RULE, sg_rule(cidrIp=None, sourceSecurityGroupId="sg-123"), id="from-security-group"),
        pytest.param(RULE, sg_rule(cidrIp=UNKNOWN_STRING_VALUE), id="cidr-unknown"),
        pytest.param(INSTANCE, sg_rule(cidrIp="0.0.0.0/0"), id="other-resource-type"),
    ],
)
def test_world_open_silent(resource_type, props):
    assert rules.check_no_world_open_admin_ports(resource_type, props) == []


# --- instance-type-in-catalog --------------------------------------------------------


def test_catalog_fires_on_unknown_gpu_family():
    messages = rules.check_instance_type_in_catalog(INSTANCE, instance(instanceType="ecs.gn7s-c8g1.2xlarge"))
    assert len(messages) == 1
    assert "ecs.gn7s-c8g1.2xlarge" in messages[0]
    assert ", ".join(catalog.supported_families()) in messages[0]


@pytest.mark.parametrize("pool,role", [("gpu", "control-plane"), ("train", "worker")])
def test_catalog_fires_on_non_gpu_type_tagged_as_gpu_node(pool, role):
    props = instance(instanceType="ecs.g7.large", tags={"gpu-k8s-pool": pool, "gpu-k8s-role": role})
    messages = rules.check_instance_type_in_catalog(INSTANCE, props)
    assert len(messages) == 1
    assert "ecs.g7.large" in messages[0] and "not a GPU instance type" in messages[0]
    assert ", ".join(catalog.supported_families()) in messages[0]


@pytest.mark.parametrize(
    "resource_type,props",
    [
        pytest.param(INSTANCE, instance(), id="catalog-vgpu"),
        pytest.param(INSTANCE, instance(instanceType="ecs.gn6i-c4g1.xlarge"), id="catalog-compute"),
        pytest.param(INSTANCE, instance(instanceType="ecs.ebmgn7i.32xlarge"), id="catalog-bare-metal"),
        pytest.param(
            INSTANCE,
            instance(instanceType="ecs.g7.large", tags={"gpu-k8s-pool": "control-plane", "gpu-k8s-role": "control-plane"}),
            id="non-gpu-control-plane",
        ),
        pytest.param(INSTANCE, instance(instanceType="ecs.g7.large", tags={"team": "x"}), id="non-gpu-not-a-node"),
        pytest.param(INSTANCE, instance(instanceType="ecs.g7.large", tags=None), id="non-gpu-untagged"),
        pytest.param(INSTANCE, instance(instanceType="ecs.g7.large", tags=UNKNOWN_OBJECT_VALUE), id="tags-unknown"),
        pytest.param(RULE, instance(instanceType="ecs.gn7s-c8g1.2xlarge"), id="other-resource-type"),
    ],
)
def test_catalog_silent(resource_type, props):
    assert rules.check_instance_type_in_catalog(resource_type, props) == []


# --- the engine's view: unknowns raise inside the proxy ------------------------------


def test_rules_read_the_engines_proxy():
    """The engine wraps inputs in a proxy that raises on unknowns; rules must not let it escape."""
    preview = unknown_checking_proxy(instance(autoReleaseTime=UNKNOWN_STRING_VALUE, tags=UNKNOWN_OBJECT_VALUE))
    for rule in ALL_RULES:
        assert rule(INSTANCE, preview) == []
    violating = unknown_checking_proxy(instance(autoReleaseTime=None, instanceType="ecs.gn7s-c8g1.2xlarge"))
    assert len(rules.check_gpu_instance_auto_release(INSTANCE, violating)) == 1
    assert len(rules.check_instance_type_in_catalog(INSTANCE, violating)) == 1
    world = unknown_checking_proxy(sg_rule(cidrIp="0.0.0.0/0"))
    assert len(rules.check_no_world_open_admin_ports(RULE, world)) == 1


# --- the real program ----------------------------------------------------------------


def _messages(run) -> list[tuple[str, str, str]]:
    found = []
    for res in run.resources:
        for props in (res.inputs, unknown_checking_proxy(res.inputs)):
            for name, rule in rules.RULES.items():
                found += [(name, res.name, m) for m in rule(res.type, props)]
    return found


@pytest.mark.parametrize("stack", ["dev", "p4", "mixed"])
def test_silent_on_default_stacks(stack):
    run = run_program(stack)
    types = {r.type for r in run.resources}
    assert INSTANCE in types and RULE in types, "the run must hold what the rules check"
    assert _messages(run) == []


def _stack(run) -> list[tuple[str, str, dict]]:
    """What a stack policy sees: every resource with its outputs (inputs echoed by the mocks)."""
    return [(r.type, r.urn, {**r.inputs, **r.outputs}) for r in run.resources]


def test_ack_node_pools_need_a_scale_to_zero_task():
    assert rules.check_node_pools_scale_to_zero(_stack(shipped("ack"))) == []
    off = run_program("ack", {"gpu-k8s:ttlHours": "0"})
    found = rules.check_node_pools_scale_to_zero(_stack(off))
    (pool,) = off.of_type(rules.NODE_POOL)
    assert found == [(found[0][0], pool.urn)] and "bill until `make down`" in found[0][0]
    # a task on another group, or a disabled one, does not count
    pool_props = {"nodePoolName": "gpu", "scalingGroupId": "asg-1"}
    other = {"scalingGroupId": "asg-2", "desiredCapacity": 0, "taskEnabled": True}
    disabled = {"scalingGroupId": "asg-1", "desiredCapacity": 0, "taskEnabled": False}
    for task in (other, disabled):
        stack = [(rules.NODE_POOL, "urn:p", pool_props), (rules.SCHEDULED_TASK, "urn:t", task)]
        assert len(rules.check_node_pools_scale_to_zero(stack)) == 1
    unknown = [(rules.NODE_POOL, "urn:p", {"scalingGroupId": UNKNOWN_STRING_VALUE})]
    assert rules.check_node_pools_scale_to_zero(unknown) == []  # preview: not judged


def test_ack_node_pools_are_checked_against_the_catalog():
    run = shipped("ack")
    assert run.of_type(rules.NODE_POOL) and _messages(run) == []
    vgpu = rules.check_instance_type_in_catalog(rules.NODE_POOL, {"instanceTypes": ["ecs.sgn7i-vws-m2s.xlarge"]})
    assert len(vgpu) == 1 and "vGPU family" in vgpu[0]
    cpu = rules.check_instance_type_in_catalog(rules.NODE_POOL, {"instanceTypes": ["ecs.g7.large"]})
    assert len(cpu) == 1 and "not a GPU instance type" in cpu[0]
    unknown = rules.check_instance_type_in_catalog(rules.NODE_POOL, {"instanceTypes": ["ecs.gn7s-c8g1.2xlarge"]})
    assert len(unknown) == 1 and "does not know" in unknown[0]


def test_real_program_without_ttl_or_with_open_cidrs_is_caught():
    """The rules match what the program really sends, not just hand-written inputs."""
    run = run_program("dev", {"gpu-k8s:ttlHours": 0, "gpu-k8s:allowedCidrs": ["0.0.0.0/0"]})
    fired = {(name, res) for name, res, _ in _messages(run)}
    assert ("gpu-instance-needs-auto-release", "gpu-0-instance") in fired
    world_rules = {r.name for r in run.of_type(RULE) if r.inputs.get("cidrIp") == "0.0.0.0/0"}
    assert len(world_rules) == 2, world_rules  # the 22 rule and the 6443 rule
    assert {res for name, res in fired if name == "no-world-open-admin-ports"} == world_rules


def test_real_program_dedicated_non_gpu_control_plane_is_silent():
    run = run_program("dev", {"gpu-k8s:controlPlaneInstanceType": "ecs.g7.large"})
    assert any(r.inputs.get("instanceType") == "ecs.g7.large" for r in run.of_type(INSTANCE))
    assert _messages(run) == []


# --- the pack's wiring (policy/__main__.py) ------------------------------------------


def test_pack_lists_the_four_policies_with_their_levels():
    pack = importlib.import_module("policy.__main__")  # __name__ != "__main__": no gRPC server
    assert pack.PACK_NAME == "gpu-k8s-safety"
    levels = {p.name: p.enforcement_level for p in pack.policies()}
    assert levels == {
        "gpu-instance-needs-auto-release": EnforcementLevel.MANDATORY,
        "no-world-open-admin-ports": EnforcementLevel.MANDATORY,
        "instance-type-in-catalog": EnforcementLevel.ADVISORY,
        "gpu-node-pool-needs-scale-to-zero": EnforcementLevel.MANDATORY,
    }


def test_pack_policies_report_rule_messages():
    pack = importlib.import_module("policy.__main__")
    by_name = {p.name: p for p in pack.policies()}
    cases = {  # name: (resource type, violating inputs, compliant inputs)
        "gpu-instance-needs-auto-release": (INSTANCE, instance(autoReleaseTime=""), instance()),
        "no-world-open-admin-ports": (RULE, sg_rule(cidrIp="0.0.0.0/0"), sg_rule()),
        "instance-type-in-catalog": (INSTANCE, instance(instanceType="ecs.gn7s-c8g1.2xlarge"), instance()),
    }
    for name, (resource_type, props, compliant) in cases.items():
        reported: list[tuple[str, object]] = []
        args = ResourceValidationArgs(resource_type, unknown_checking_proxy(props), "urn:x", "x", None, None)
        by_name[name].validate(args, lambda message, urn=None, out=reported: out.append((message, urn)))
        assert reported == [(m, None) for m in rules.RULES[name](resource_type, props)] != [], name
        silent: list = []
        args = ResourceValidationArgs(resource_type, unknown_checking_proxy(compliant), "urn:x", "x", None, None)
        by_name[name].validate(args, lambda message, urn=None, out=silent: out.append(message))
        assert silent == [], name


def test_pack_serves_as_the_cli_starts_it():
    """`python -m pulumi.policy <engine> <pack dir>` is how the CLI runs a Python pack.

    The analyzer answers GetAnalyzerInfo and Analyze without an engine behind it, so this
    proves the imports work from the pack's own directory and the policies reach gRPC.
    """
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(PACK_DIR)],
        cwd=PACK_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        port = proc.stdout.readline().decode().strip() if ready else ""
        assert port.isdigit(), proc.stderr.read1().decode() if proc.poll() is not None else "no port printed"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = analyzer_pb2_grpc.AnalyzerStub(channel)
            info = stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
            assert info.name == "gpu-k8s-safety"
            assert [p.name for p in info.policies] == [*rules.RULES, *rules.STACK_RULES]

            def analyze(resource_type: str, props: dict) -> list[str]:
                request = analyzer_pb2.AnalyzeRequest(
                    type=resource_type, urn=f"urn:pulumi:dev::gpu-k8s::{resource_type}::x", name="x"
                )
                request.properties.update(props)
                return sorted(d.policyName for d in stub.Analyze(request, timeout=30).diagnostics)

            assert analyze(INSTANCE, instance(autoReleaseTime=None, instanceType="ecs.gn7s-c8g1.2xlarge")) == [
                "gpu-instance-needs-auto-release",
                "instance-type-in-catalog",
            ]
            assert analyze(INSTANCE, instance(autoReleaseTime=UNKNOWN_STRING_VALUE)) == []  # first preview
            assert analyze(RULE, sg_rule(cidrIp="0.0.0.0/0")) == ["no-world-open-admin-ports"]
            assert analyze(RULE, sg_rule()) == []
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_pack_stack_policy_reports_the_pool_without_a_task():
    from pulumi_policy import PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, StackValidationArgs

    pack = importlib.import_module("policy.__main__")
    (policy,) = [p for p in pack.policies() if p.name == "gpu-node-pool-needs-scale-to-zero"]
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])

    def resource(type_: str, urn: str, props: dict) -> PolicyResource:
        return PolicyResource(type_, props, urn, urn.rsplit("::", 1)[-1], opts, None, None, [], {})

    pool = resource(rules.NODE_POOL, "urn:x::pool", {"nodePoolName": "gpu", "scalingGroupId": "asg-1"})
    task = resource(rules.SCHEDULED_TASK, "urn:x::task", {"scalingGroupId": "asg-1", "desiredCapacity": 0})
    reported: list = []
    policy.validate(StackValidationArgs([pool]), lambda message, urn=None: reported.append(urn))
    assert reported == ["urn:x::pool"]
    reported.clear()
    policy.validate(StackValidationArgs([pool, task]), lambda message, urn=None: reported.append(urn))
    assert reported == []
