"""The whole program under mocks: network, nodes, access, TTL, cost, secrets, for each stack."""

import json
from decimal import Decimal

import pytest
from helpers import shipped

from tools.harness import is_secret, reveal, run_program
from tools.mocks import DEPLOYER_IP, ZONE, PlaceholderMocks

INSTANCE = "alicloud:ecs/instance:Instance"
RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"


def instances(run):
    return run.of_type(INSTANCE)


def test_dev_stack_is_one_postpaid_vgpu_node(program):
    run = shipped("dev")
    (inst,) = instances(run)
    i = inst.inputs
    assert i["instanceType"] == "ecs.sgn7i-vws-m2s.xlarge"
    assert i["instanceChargeType"] == "PostPaid"
    assert i["spotStrategy"] == "NoSpot"
    assert i["systemDiskCategory"] == "cloud_essd" and i["systemDiskSize"] == 60
    assert i["internetMaxBandwidthOut"] > 0 and i["internetChargeType"] == "PayByTraffic"
    assert i["imageId"].startswith("<image-id")
    assert i["keyName"].startswith("gpu-k8s-dev-cn-hangzhou-")  # project-stack-region-<public key hash>
    assert "password" not in i
    assert run.outputs["nodes"]["gpu-0"]["driver"] == "grid"
    assert run.outputs["nodes"]["gpu-0"]["ssh"].endswith("root@" + run.outputs["controlPlaneIp"])


def test_p4_stack_is_a_tesla_compute_node(program):
    run = shipped("p4")
    (inst,) = instances(run)
    assert inst.inputs["instanceType"] == "ecs.gn5i-c2g1.large"
    assert run.outputs["nodes"]["gpu-0"]["driver"] == "tesla"
    assert run.outputs["nodes"]["gpu-0"]["gpu"] == "1x Tesla P4 (compute, Tesla driver)"


def test_image_and_zone_come_from_lookups(program):
    mocks = PlaceholderMocks()
    run = run_program("dev", mocks=mocks)
    calls = {c.token: c.args for c in mocks.invokes}
    zones = calls["alicloud:index/getZones:getZones"]
    assert zones["availableInstanceType"] == "ecs.sgn7i-vws-m2s.xlarge"
    assert zones["availableResourceCreation"] == "VSwitch"
    images = calls["alicloud:ecs/getImages:getImages"]
    assert images["nameRegex"] == "^ubuntu_22_04_x64_20G_alibase_" and images["owners"] == "system" and images["mostRecent"]
    assert run.named("gpu-k8s-vswitch").inputs["zoneId"] == ZONE


class NoZoneMocks(PlaceholderMocks):
    def call(self, args):
        if args.token == "alicloud:index/getZones:getZones":
            return {"ids": [], "zones": []}
        return super().call(args)


def test_no_zone_is_a_config_error_naming_type_and_region():
    from components.config import ConfigError

    with pytest.raises(ConfigError) as err:
        run_program("dev", mocks=NoZoneMocks())
    assert "ecs.sgn7i-vws-m2s.xlarge" in str(err.value) and "cn-hangzhou" in str(err.value)


def test_security_group_opens_only_22_and_6443_to_allowed_cidrs(program):
    run = program("dev", allowedCidrs=["auto", "203.0.113.0/24"])
    rules = {(r.inputs["portRange"], r.inputs["cidrIp"]) for r in run.of_type(RULE)}
    assert rules == {
        ("22/22", f"{DEPLOYER_IP}/32"),
        ("6443/6443", f"{DEPLOYER_IP}/32"),
        ("22/22", "203.0.113.0/24"),
        ("6443/6443", "203.0.113.0/24"),
    }
    assert all(r.inputs["type"] == "ingress" and r.inputs["ipProtocol"] == "tcp" for r in run.of_type(RULE))
    assert run.named("gpu-k8s-sg").inputs["innerAccessPolicy"] == "Accept"
    assert not [w for w in run.warnings if "0.0.0.0/0" in w]


def test_world_open_only_when_listed_and_then_warned(program):
    run = program("dev", allowedCidrs=["0.0.0.0/0"])
    assert {r.inputs["cidrIp"] for r in run.of_type(RULE)} == {"0.0.0.0/0"}
    assert any("0.0.0.0/0" in w for w in run.warnings)


def test_secrets_are_secret(program):
    run = shipped("dev")
    assert is_secret(run.outputs["sshPrivateKey"])
    key = run.named("gpu-k8s-ssh-private-key")
    assert "private_key_openssh" in key.additional_secret_outputs or "privateKeyOpenssh" in key.additional_secret_outputs


# --- auto-release --------------------------------------------------------------------


def anchor_and_release(clock: float, **overrides):
    cfg = {f"gpu-k8s:{k}": v for k, v in overrides.items()}
    run = run_program("dev", cfg, mocks=PlaceholderMocks(clock=lambda: clock))
    return run, anchors_of(run)


def anchors_of(run):
    return [r for r in run.of_type("command:local:Command") if r.name.endswith("-ttl-anchor")]


def test_ttl_inputs_do_not_depend_on_wall_clock():
    # Two runs hours apart: the anchor's inputs are identical, so Pulumi sees no diff and
    # keeps the stored anchor (and with it the release time) instead of re-running it.
    run1, (a1,) = anchor_and_release(1_800_000_000)
    run2, (a2,) = anchor_and_release(1_800_000_000 + 5 * 3600)
    assert (a1.inputs, a1.name) == (a2.inputs, a2.name)
    inst1 = run1.of_type(INSTANCE)[0]
    assert a1.urn in inst1.dependencies  # the release time flows from the anchor only


def test_release_time_is_anchor_plus_ttl():
    run, _ = anchor_and_release(1_800_000_000)  # 2027-01-15T08:00:00Z
    # 12:00 would end in 0, which the provider's diff suppression mishandles: 12:01 (auto_release.py).
    assert run.outputs["autoReleaseTime"] == "2027-01-15T12:01:00Z"
    assert run.of_type(INSTANCE)[0].inputs["autoReleaseTime"] == "2027-01-15T12:01:00Z"


def test_changing_ttl_replaces_the_anchor():
    _, (a4,) = anchor_and_release(1_800_000_000)
    run6, (a6,) = anchor_and_release(1_800_000_000, ttlHours="6")
    assert a4.inputs["triggers"] != a6.inputs["triggers"]  # triggers change => replace => new anchor
    assert run6.outputs["autoReleaseTime"] == "2027-01-15T14:01:00Z"


def test_ttl_zero_omits_auto_release_and_warns(program):
    run = program("dev", ttlHours="0")
    assert not anchors_of(run)
    assert "autoReleaseTime" not in run.of_type(INSTANCE)[0].inputs
    assert any("auto-release is OFF" in w for w in run.warnings)
    assert run.outputs["cost"]["maxBeforeAutoRelease"].startswith("unbounded")


# --- spot ----------------------------------------------------------------------------


def test_spot_as_price_go(program):
    i = instances(program("dev", spot="true"))[0].inputs
    assert i["spotStrategy"] == "SpotAsPriceGo" and "spotPriceLimit" not in i


def test_spot_with_price_limit(program):
    i = instances(program("dev", spot="true", spotPriceLimit="1.234"))[0].inputs
    assert i["spotStrategy"] == "SpotWithPriceLimit" and i["spotPriceLimit"] == pytest.approx(1.234)


# --- cost ----------------------------------------------------------------------------


def test_cost_of_dev_stack_is_a_labelled_estimate(program):
    cost = shipped("dev").outputs["cost"]
    assert cost["estimate"] is True
    assert cost["perNode"][0]["hourly"] == "1.83" and "estimate" in cost["perNode"][0]["source"]
    assert cost["hourlyTotal"] == "1.83" and cost["maxBeforeAutoRelease"] == "7.33"


def test_cost_sums_over_pools_with_overrides(program):
    cost = program("mixed", nodePools=[
        {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2, "hourlyPriceCny": "10"},
        {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4},
    ]).outputs["cost"]  # fmt: skip
    assert len(cost["perNode"]) == 6
    # train nodes use the pool's override (10) over the catalog; infer nodes the catalog's list price (1.833)
    assert Decimal(cost["hourlyTotal"]) == (Decimal("2") * 10 + Decimal("4") * Decimal("1.833")).quantize(Decimal("0.01"))


def test_every_shipped_stack_has_a_known_hourly_price():
    for stack in ("dev", "p4", "mixed", "ack"):
        cost = shipped(stack).outputs["cost"]
        assert all(node["hourly"] is not None for node in cost["perNode"]), stack
        assert "unknown" not in cost["hourlyTotal"], stack


def test_unknown_prices_are_said_to_be_unknown(program):
    cost = program("dev", instanceType="ecs.gn6v-c8g1.2xlarge").outputs["cost"]
    assert cost["hourlyTotal"].startswith("at least")
    assert any(n["hourly"] is None and "unknown" in n["source"] for n in cost["perNode"])


def test_reveal_helper_unwraps_secrets():
    assert reveal({"a": {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": 1}}) == {"a": 1}


def test_mainland_china_without_mirrors_is_warned(program):
    assert any("registryMirrors" in w for w in shipped("dev").warnings)
    mirrors = {
        "docker.io": "https://x.mirror.aliyuncs.com",
        "nvcr.io": "https://nvcr.example.cn",
        "registry.k8s.io": "https://k8s.example.cn",
    }
    assert not any("registryMirrors" in w for w in program("dev", registryMirrors=mirrors).warnings)
    assert not any("registryMirrors" in w for w in program("dev", **{"alicloud:region": "ap-southeast-1"}).warnings)


def test_make_extend_replaces_every_nodes_anchor():
    # `make extend` restarts every node's countdown by replacing all anchors (URNs from the plan).
    import re
    import subprocess

    from tools import plan
    from tools.harness import ROOT

    recipe = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "extend", "STACK=mixed"], capture_output=True, text=True, check=True
    ).stdout
    pattern = re.search(r"--urns='([^']+)'", recipe).group(1)
    run = plan.plan("mixed", [])
    chosen = sorted(r.urn for r in run.resources if re.search(pattern, r.name))
    anchors = anchors_of(run)
    assert chosen == sorted(a.urn for a in anchors) and len(anchors) == 6
    # One level below the stack: the plan's URN is the engine's (parent type + own type).
    assert all(a.urn.split("::")[2] == "gpu-k8s:auto_release:AutoRelease$command:local:Command" for a in anchors)


def test_grid_driver_url_is_secret_on_stdin_only(program):
    from tools.harness import reveal as plain

    run = program("dev", gridDriverUrl="https://example.com/grid.run?token=abc")
    driver = run.named("gpu-0-bootstrap-nvidia-driver")
    assert is_secret(driver.inputs["stdin"])
    assert plain(driver.inputs["stdin"]) == "https://example.com/grid.run?token=abc\n"
    assert "token=abc" not in json.dumps(plain(driver.inputs["create"]))
    assert driver.inputs["logging"] == "stdoutAndStderr"  # the script never prints the URL


class PerTypeZoneMocks(PlaceholderMocks):
    """train types sell in zones h and i, infer types in i and j: only i sells both."""

    def __init__(self, zones: dict[str, list[str]]):
        super().__init__()
        self.zones = zones

    def call(self, args):
        if args.token == "alicloud:index/getZones:getZones":
            ids = self.zones[args.args["availableInstanceType"]]
            return {"ids": ids, "zones": [{"id": z} for z in ids]}
        return super().call(args)


def test_zone_is_one_that_sells_every_type():
    zones = {
        "ecs.gn6i-c4g1.xlarge": ["cn-hangzhou-h", "cn-hangzhou-i"],
        "ecs.sgn7i-vws-m2s.xlarge": ["cn-hangzhou-i", "cn-hangzhou-j"],
    }
    run = run_program("mixed", mocks=PerTypeZoneMocks(zones))
    assert run.named("gpu-k8s-vswitch").inputs["zoneId"] == "cn-hangzhou-i"


def test_no_common_zone_is_a_config_error():
    from components.config import ConfigError

    zones = {"ecs.gn6i-c4g1.xlarge": ["cn-hangzhou-h"], "ecs.sgn7i-vws-m2s.xlarge": ["cn-hangzhou-j"]}
    with pytest.raises(ConfigError) as err:
        run_program("mixed", mocks=PerTypeZoneMocks(zones))
    assert "ecs.gn6i-c4g1.xlarge, ecs.sgn7i-vws-m2s.xlarge" in str(err.value)
