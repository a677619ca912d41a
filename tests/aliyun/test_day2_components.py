"""Day 2: what a later `pulumi up` does to a running stack (issue 9, defects 1, 2, 3, 5, 7).

Two runs of the real program: the second under changed facts (newer image, sold-out
zone, later clock, replaced worker) or config. Where the answer depends on the engine,
the test applies the rule of ../shared/reference/replacement-semantics.md it names:
- ignore_changes: the old input is kept for the listed properties (§5);
- pulumi-command: same inputs = no diff, the stored stdout stays (§2);
- random.RandomString: changed ``keepers`` replace it, i.e. a new value (§4).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from helpers import dependency_names, shipped

from components.aliyun import auto_release, ssh_key
from components.config import ConfigError
from tools.harness import ROOT, ProgramRun, redact, reveal, run_program
from tools.mocks import PlaceholderMocks

INSTANCE = "alicloud:ecs/instance:Instance"
VSWITCH = "alicloud:vpc/switch:Switch"
RULE = "alicloud:ecs/securityGroupRule:SecurityGroupRule"
GET_ZONES = "alicloud:index/getZones:getZones"
GET_SWITCHES = "alicloud:vpc/getSwitches:getSwitches"
GET_IMAGES = "alicloud:ecs/getImages:getImages"
T0 = 1_800_000_000  # 2027-01-15T08:00:00Z


def canon(value) -> str:
    return json.dumps(redact(reveal(value)), sort_keys=True, default=str)


@functools.cache
def plain(name: str) -> ProgramRun:
    """The stack's own config in the default mock world (shared, read-only)."""
    return run_program(name)


def stack(name: str = "dev", mocks: PlaceholderMocks | None = None, **overrides) -> ProgramRun:
    return run_program(name, {(k if ":" in k else f"gpu-k8s:{k}"): v for k, v in overrides.items()}, mocks=mocks)


class World(PlaceholderMocks):
    """The mock cloud with day-2 facts: the newest image, zones per type, this stack's vSwitch,
    replaced instances, and the state of a previous run (local commands keep their stdout)."""

    def __init__(
        self,
        *,
        clock: float = T0,
        image: str | None = None,
        zones: dict[str, list[str]] | list[str] | None = None,
        existing_zone: str | None = None,
        untagged_zone: str | None = None,
        replaced: tuple[str, ...] = (),
        previous: ProgramRun | None = None,
    ):
        super().__init__(clock=lambda: clock)
        self.image, self.zones, self.existing_zone, self.replaced = image, zones, existing_zone, replaced
        self.untagged_zone = untagged_zone
        self.stored = {r.name: r for r in previous.of_type("command:local:Command")} if previous else {}

    def call(self, args):
        if args.token == GET_IMAGES and self.image:
            return {"ids": [self.image], "images": [{"id": self.image, "imageId": self.image, "name": self.image}]}
        if args.token == GET_ZONES and self.zones is not None:
            self.invokes.append(args)
            ids = self.zones if isinstance(self.zones, list) else self.zones[args.args["availableInstanceType"]]
            return {"ids": ids, "zones": [{"id": z} for z in ids]}
        if args.token == GET_SWITCHES and self.untagged_zone and not args.args.get("tags"):
            self.invokes.append(args)  # a vSwitch made before the network was tagged
            return {"ids": ["vsw-0"], "vswitches": [{"id": "vsw-0", "zoneId": self.untagged_zone, "tags": {}}]}
        if args.token == GET_SWITCHES and self.existing_zone:
            self.invokes.append(args)
            return {"ids": ["vsw-1"], "vswitches": [{"id": "vsw-1", "zoneId": self.existing_zone, "vpcId": "vpc-1"}]}
        return super().call(args)

    def new_resource(self, args):
        rid, out = super().new_resource(args)
        if args.name in self.replaced:
            rid = f"{rid} (replacement)"
        old = self.stored.get(args.name)
        if args.typ == "command:local:Command" and old is not None and canon(old.inputs) == canon(dict(args.inputs)):
            out["stdout"] = old.outputs["stdout"]  # no diff: the engine keeps the stored outputs
        return rid, out


def effective_changes(before: ProgramRun, after: ProgramRun, urn: str) -> set[str]:
    """Input keys that differ between the runs, minus those the resource ignores (§5)."""
    a, b = before.by_urn()[urn], after.by_urn()[urn]
    keys = {k for k in a.inputs.keys() | b.inputs.keys() if canon(a.inputs.get(k)) != canon(b.inputs.get(k))}
    return keys - set(b.options["ignoreChanges"])


# --- 1. the image is chosen once -------------------------------------------------------


def test_a_newer_image_never_reaches_running_instances():
    first = stack("dev", World(image="ubuntu_22_04_x64_20G_alibase_20270101.vhd"), nodeCount="2")
    newer = World(image="ubuntu_22_04_x64_20G_alibase_20270201.vhd", previous=first)
    second = run_program("dev", {"gpu-k8s:nodeCount": "2"}, mocks=newer, previous=first)
    instances = first.of_type(INSTANCE)
    assert len(instances) == 2
    for inst in instances:
        # The lookup's answer changed; the node's image record only runs its update, which
        # prints the image it has, so the instance's image_id is unchanged: no ReplaceSystemDisk (§1.2).
        assert canon(second.by_urn()[inst.urn].inputs["imageId"]) == canon(inst.inputs["imageId"])
        assert inst.inputs["imageId"] == "ubuntu_22_04_x64_20G_alibase_20270101.vhd"
        assert effective_changes(first, second, inst.urn) == set(), inst.name
        assert "imageId" not in second.by_urn()[inst.urn].options["ignoreChanges"]  # it would stick on replace


def test_pinned_image_is_used_without_a_lookup_and_is_an_output():
    mocks = World()
    run = stack("dev", mocks, imageId="m-bp1abcdef0123456789")
    assert {i.inputs["imageId"] for i in run.of_type(INSTANCE)} == {"m-bp1abcdef0123456789"}
    assert GET_IMAGES not in {c.token for c in mocks.invokes}
    assert run.outputs["imageId"] == "m-bp1abcdef0123456789"
    assert run.outputs["nodes"]["gpu-0"]["imageId"] == "m-bp1abcdef0123456789"


def test_looked_up_image_is_an_output():
    run = stack("dev", World(image="ubuntu_22_04_x64_20G_alibase_20270101.vhd"))
    assert run.outputs["imageId"] == "ubuntu_22_04_x64_20G_alibase_20270101.vhd"


@pytest.mark.parametrize("bad", ["m bp1", "-m-bp1", "m-" + "a" * 200])
def test_bad_image_id_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"(?s)^gpu-k8s:imageId:\s.*\sis not accepted; expected an ECS image id"):
        stack("dev", imageId=bad)


# --- 2. the zone is chosen once ----------------------------------------------------------


def test_existing_vswitch_keeps_its_zone_whatever_the_lookup_says():
    mocks = World(zones=["cn-hangzhou-i"], existing_zone="cn-hangzhou-k")
    run = stack("dev", mocks)
    assert run.named("gpu-k8s-vswitch").inputs["zoneId"] == "cn-hangzhou-k"
    assert run.outputs["zone"] == "cn-hangzhou-k"
    (ask,) = [c.args for c in mocks.invokes if c.token == GET_SWITCHES]
    assert ask["vswitchName"] == "gpu-k8s-vswitch" and ask["tags"] == {"managed-by": "gpu-k8s", "gpu-k8s-stack": "dev"}
    assert run.named("gpu-k8s-vswitch").inputs["tags"] == ask["tags"]  # what the next run finds it by
    assert any("cn-hangzhou-k does not currently sell" in w for w in run.warnings)


def test_type_sold_out_everywhere_does_not_block_a_running_stack():
    # e.g. `make extend` hours later: the lookup is empty, the known zone is kept (a warning).
    run = stack("dev", World(zones=[], existing_zone="cn-hangzhou-k"))
    assert run.named("gpu-k8s-vswitch").inputs["zoneId"] == "cn-hangzhou-k"


def test_type_sold_out_on_the_first_deploy_is_a_clear_error():
    with pytest.raises(ConfigError, match="ecs.sgn7i-vws-m2s.xlarge.*cn-hangzhou.*cloud_essd"):
        stack("dev", World(zones=[]))


def test_vswitch_ignores_zone_changes():
    # zone_id is ForceNew on the vSwitch (§1.1): a later answer must not replace it.
    first = stack("dev", World(zones=["cn-hangzhou-h", "cn-hangzhou-i"]))
    second = stack("dev", World(zones=["cn-hangzhou-i"]))
    vsw = first.named("gpu-k8s-vswitch")
    assert "zoneId" in vsw.options["ignoreChanges"]
    assert effective_changes(first, second, vsw.urn) == set()


def test_a_stack_from_before_the_tags_keeps_its_zone_when_every_zone_is_sold_out():
    # Its vSwitch has the name but no tags: found by name (the only one), its zone kept, no refusal.
    run = stack("dev", World(zones=[], untagged_zone="cn-hangzhou-k"))
    assert run.outputs["zone"] == "cn-hangzhou-k"


def test_pinned_zone_is_used_and_checked():
    assert stack("dev", World(zones=["cn-hangzhou-h", "cn-hangzhou-j"]), zoneId="cn-hangzhou-j").outputs["zone"] == (
        "cn-hangzhou-j"
    )
    with pytest.raises(ConfigError, match=r"^gpu-k8s:zoneId: 'cn-hangzhou-k' is not accepted.*cn-hangzhou-h"):
        stack("dev", World(zones=["cn-hangzhou-h"]), zoneId="cn-hangzhou-k")


def test_pinned_zone_other_than_the_existing_one_is_warned_not_applied():
    run = stack("dev", World(zones=["cn-hangzhou-h"], existing_zone="cn-hangzhou-k"), zoneId="cn-hangzhou-h")
    assert run.outputs["zone"] == "cn-hangzhou-k"
    assert any("zoneId is cn-hangzhou-h, but this stack's vSwitch is in cn-hangzhou-k" in w for w in run.warnings)


@pytest.mark.parametrize("bad", ["cn-shanghai-a", "hangzhou-h", "cn-hangzhou-H"])
def test_zone_of_another_region_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"^gpu-k8s:zoneId: .* a zone of cn-hangzhou"):
        stack("dev", zoneId=bad)


def test_zone_lookup_asks_for_an_essd_system_disk_for_every_type():
    mocks = World(zones=["cn-hangzhou-i"])
    run = stack("dev", mocks, controlPlaneInstanceType="ecs.g7.large")
    asked = [c.args for c in mocks.invokes if c.token == GET_ZONES]
    assert [a["availableInstanceType"] for a in asked] == ["ecs.sgn7i-vws-m2s.xlarge", "ecs.g7.large"]
    assert {a["availableDiskCategory"] for a in asked} == {"cloud_essd"}
    assert {i.inputs["systemDiskCategory"] for i in run.of_type(INSTANCE)} == {"cloud_essd"}


def test_plan_says_where_the_catalog_does_not_know_essd_support():
    p4 = stack("p4").warnings  # gn5i: the catalog has no disk data
    assert any("ecs.gn5i-c2g1.large takes a cloud_essd" in w and "at deploy time" in w for w in p4)
    assert not any("cloud_essd system disk;" in w for w in shipped("dev").warnings)  # sgn7i-vws: ESSD only


# --- 3. auto-release valid for each node when it is created -------------------------------


def release(run: ProgramRun, node: str) -> datetime:
    return datetime.strptime(run.named(f"{node}-instance").inputs["autoReleaseTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def test_node_added_hours_later_gets_its_own_fresh_release_time():
    first = stack("dev", World(clock=T0))
    later = T0 + 4 * 3600 + 600
    second = stack("dev", World(clock=later, previous=first), nodeCount="2")
    assert release(second, "gpu-0") == release(first, "gpu-0")  # the running node keeps its time
    # The new node: at least the API's 30 minutes (plus the margin) after its creation.
    created = datetime.fromtimestamp(later, tz=UTC)
    assert release(second, "gpu-1") >= created + timedelta(minutes=30 + 10)
    assert release(second, "gpu-1") >= created + timedelta(hours=4)


def test_each_instance_follows_its_own_anchor():
    run = shipped("mixed")
    for inst in run.of_type(INSTANCE):
        node = inst.name.removesuffix("-instance")
        anchors = dependency_names(run, inst.name, types="command:local:Command")
        assert sorted(anchors) == [f"{node}-image", f"{node}-ttl-anchor"]  # its image record and its anchor


def test_replacing_inputs_re_anchor_every_node():
    # spot is ForceNew on the instance: the new instances need fresh anchors (triggers change).
    a, b = shipped("dev"), stack("dev", spot="true")
    assert canon(a.named("gpu-0-ttl-anchor").inputs["triggers"]) != canon(b.named("gpu-0-ttl-anchor").inputs["triggers"])


def provider_suppresses(old: str, new: str) -> bool:
    """alicloud_instance auto_release_time DiffSuppressFunc: new starts with strings.Trim(old, ":00Z") (§1.3)."""
    return new.startswith(old.strip(":0Z"))


def test_moving_a_release_time_is_never_suppressed_by_the_provider():
    times = [auto_release.release_time(T0 + minutes * 60, Decimal(4)) for minutes in range(0, 24 * 60, 7)]
    assert all(not t.endswith("0:00Z") for t in times)
    for old in times[:60]:
        for new in times:
            if new != old:
                assert not provider_suppresses(old, new), (old, new)


@pytest.mark.parametrize("ttl", ["0.75", "4", "26280"])
def test_release_time_leaves_the_margin_above_the_api_minimum(ttl):
    when = datetime.strptime(auto_release.release_time(T0, Decimal(ttl)), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    start = datetime.fromtimestamp(T0, tz=UTC)
    assert when >= start + timedelta(hours=float(ttl)) and when >= start + timedelta(minutes=45)
    assert when < start + timedelta(hours=float(ttl), minutes=12)


def test_half_an_hour_races_the_api_minimum_and_is_refused():
    with pytest.raises(ConfigError, match=r"^gpu-k8s:ttlHours: '0.5' is not accepted.*0.75"):
        stack("dev", ttlHours="0.5")


# --- 5. every join gets a live token --------------------------------------------------------


def test_each_worker_gets_its_own_token_made_before_its_join():
    run = shipped("mixed")
    by_urn = run.by_urn()
    workers = ["train-1"] + [f"infer-{i}" for i in range(4)]
    for w in workers:
        token = run.named(f"{w}-join-token")
        join = run.named(f"{w}-kubeadm-join")
        assert token.urn in join.dependencies
        assert reveal(token.inputs["stdin"]) == reveal(join.inputs["stdin"]).splitlines()[0]
        randoms = {by_urn[d].name for d in token.dependencies if by_urn[d].type == "random:index/randomString:RandomString"}
        assert randoms == {f"{w}-token-id", f"{w}-token-secret"}
        assert token.inputs["logging"] == "stdoutAndStderr" and "xxxxxx" not in canon(redact(token.inputs["create"]))
    assert not [r for r in run.resources if r.name == "gpu-k8s-join-token"]


def test_a_replaced_worker_gets_a_new_token_and_rejoins_with_it():
    first = shipped("mixed")
    second = stack("mixed", World(replaced=("infer-2-instance",)))
    changed = {r.name for r in first.resources if effective_changes(first, second, r.urn)}
    # keepers change => the RandomStrings are replaced (a new token, §4); the token step's stdin
    # and the join's stdin follow it, so both run again for this worker only.
    assert {"infer-2-token-id", "infer-2-token-secret"} <= changed
    for name in ("infer-2-token-id", "infer-2-token-secret"):
        assert effective_changes(first, second, first.named(name).urn) == {"keepers"}
    assert not {n for n in changed if re.match(r"^(train-\d|infer-[013])-(token|join)", n)}


# --- 7. key pair, security-group rules, replacements ------------------------------------------


def test_key_pair_name_is_per_project_stack_region_and_key():
    prefix = ssh_key.key_pair_prefix("gpu-k8s", "dev", "cn-hangzhou")
    assert prefix == "gpu-k8s-dev-cn-hangzhou"
    assert ssh_key.key_pair_prefix("gpu-k8s", "team.a", "cn-beijing") == "gpu-k8s-team-a-cn-beijing"
    a, b = ssh_key.key_pair_name(prefix, "ssh-rsa AAAA1"), ssh_key.key_pair_name(prefix, "ssh-rsa AAAA2")
    assert a != b and a.startswith(prefix + "-") and re.match(r"^[A-Za-z][A-Za-z0-9:_-]{1,127}$", a)
    assert ssh_key.key_pair_name(prefix, "ssh-rsa AAAA1\n") == a  # stable for the same key


def test_instances_use_the_registered_key_pair():
    run = stack("dev", **{"alicloud:region": "ap-southeast-1"})
    (pair,) = run.of_type("alicloud:ecs/ecsKeyPair:EcsKeyPair")
    assert pair.inputs["keyPairName"].startswith("gpu-k8s-dev-ap-southeast-1-")
    assert {i.inputs["keyName"] for i in run.of_type(INSTANCE)} == {pair.inputs["keyPairName"]}


def transitive(run: ProgramRun, urn: str) -> set[str]:
    """Every resource urn waits for, directly or through others."""
    by_urn, seen, todo = run.by_urn(), set(), [urn]
    while todo:
        current = todo.pop()
        for d in by_urn[current].dependencies if current in by_urn else []:
            if d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def test_ssh_steps_wait_for_port_22_and_the_provider_for_6443():
    run = stack("dev", nodeCount="2", allowedCidrs=["auto", "203.0.113.0/24"])
    ssh = {r.urn for r in run.of_type(RULE) if r.inputs["portRange"] == "22/22"}
    api = {r.urn for r in run.of_type(RULE) if r.inputs["portRange"] == "6443/6443"}
    assert len(ssh) == len(api) == 2
    steps = run.of_type("command:remote:Command") + run.of_type("command:remote:CopyToRemote")
    assert len(steps) > 30 and any(s.name == "gpu-1-join-token" for s in steps)
    for step in steps:
        assert ssh <= transitive(run, step.urn), step.name
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert api <= set(provider.dependencies)


def test_instances_are_deleted_before_they_are_replaced():
    # A replaced worker rejoins under the same node name; kubeadm join refuses while a Ready
    # Node of that name exists, i.e. while the old instance still runs.
    assert all(i.options["deleteBeforeReplace"] for i in shipped("mixed").of_type(INSTANCE))


# --- make targets that replace resources: the URNs they pass are the engine's ---------------


def engine_urn(run: ProgramRun, r) -> str:
    """The URN the engine gives r: every ancestor's type joined by '$' (Pulumi's NewURN)."""
    by_urn, types, parent = run.by_urn(), [r.type], r.parent
    while parent in by_urn:
        types.insert(0, by_urn[parent].type)
        parent = by_urn[parent].parent
    return f"urn:pulumi:{run.stack}::gpu-k8s::{'$'.join(types)}::{r.name}"


def make_n(*args: str) -> str:
    import subprocess

    from tools.harness import ROOT

    return subprocess.run(["make", "-s", "-n", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout


def test_plan_urns_are_the_engines_for_every_resource():
    """--urns (what make extend/replace-node/rejoin/retest pass to --replace) chains every
    ancestor's type, as the engine does, also two components deep (Fleet > Node > Instance)."""
    run = shipped("mixed")
    assert all(r.urn == engine_urn(run, r) for r in run.resources)
    instance = run.named("infer-2-instance").urn
    assert "::gpu-k8s:fleet:Fleet$gpu-k8s:node:Node$alicloud:ecs/instance:Instance::" in instance


def test_make_replace_node_and_rejoin_name_the_real_resources():
    run = shipped("mixed")
    recipe = make_n("replace-node", "NODE=infer-2", "STACK=mixed")
    replaced, worker_check = re.findall(r"--urns='([^']+)'", recipe)
    assert [r.name for r in run.resources if re.search(worker_check, r.name)] == ["infer-2-kubeadm-join"]
    assert sorted(r.name for r in run.resources if re.search(replaced, r.name)) == [
        "infer-2-image",
        "infer-2-instance",
        "infer-2-ttl-anchor",
    ]
    token = re.search(r"--urns='([^']+)'", make_n("rejoin", "NODE=infer-2", "STACK=mixed")).group(1)
    (step,) = [r for r in run.resources if re.search(token, r.name)]
    assert step.name == "infer-2-join-token" and step.urn == engine_urn(run, step)


def test_fleet_refuses_release_times_that_miss_a_node():
    from components.aliyun.fleet import FleetArgs
    from components.config import NodePool
    from components.facts import catalog

    itype = "ecs.gn6i-c4g1.xlarge"
    pool = NodePool(name="gpu", instance_type=itype, count=2, profile=catalog.profile_for(itype))
    common = dict(
        pools=(pool,),
        control_plane_instance_type=None,
        image_id="m-x",
        vswitch_id="vsw",
        security_group_id="sg",
        key_pair_name="k",
        system_disk_gib=60,
        public_bandwidth_mbps=10,
        spot=False,
        spot_price_limit=None,
    )
    FleetArgs(auto_release_times={"gpu-0": "t", "gpu-1": "t"}, **common)
    FleetArgs(auto_release_times={}, **common)  # auto-release off
    with pytest.raises(ValueError, match="every node"):
        FleetArgs(auto_release_times={"gpu-0": "t"}, **common)


def test_the_record_names_the_instance_as_the_provider_receives_it():
    from components.aliyun.node import instance_identity

    assert (
        instance_identity(True, Decimal("1.80")) == instance_identity(True, Decimal("1.8")) == "SpotWithPriceLimit,1.8,cloud_essd"
    )
    assert instance_identity(False, None) == "NoSpot,,cloud_essd"


def test_image_record_keeps_the_image_of_the_running_instance_and_takes_the_current_one_for_a_new_one():
    """components/scripts/local/image-record.sh as pulumi-command runs it (/bin/sh -c <create>, in the
    project directory; on an update the previous stdout and stderr in PULUMI_COMMAND_STDOUT/_STDERR)."""
    from components import steps
    from components.aliyun.node import IMAGE_RECORD_SCRIPT

    def record(image: str, for_instance: str, **previous: str) -> subprocess.CompletedProcess:
        create = steps.local_script_command(IMAGE_RECORD_SCRIPT, {"IMAGE": image, "FOR_INSTANCE": for_instance})
        env = {"PATH": os.environ["PATH"], **previous}
        return subprocess.run(["/bin/sh", "-c", create], cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    created = record("m-new", "NoSpot,,cloud_essd")  # a new node: the image chosen now
    assert (created.returncode, created.stdout, created.stderr) == (0, "m-new", "for-instance: NoSpot,,cloud_essd")
    was = {"PULUMI_COMMAND_STDOUT": "m-old", "PULUMI_COMMAND_STDERR": "for-instance: NoSpot,,cloud_essd"}
    assert record("m-new", "NoSpot,,cloud_essd", **was).stdout == "m-old"  # a newer image: the running node keeps its own
    # spot toggled: the instance is replaced (ForceNew), so the new one gets the image chosen now
    assert record("m-new", "SpotAsPriceGo,,cloud_essd", **was).stdout == "m-new"
    # a record made before it kept FOR_INSTANCE (no stderr): keep the image, and remember from now on
    legacy = record("m-new", "SpotAsPriceGo,,cloud_essd", PULUMI_COMMAND_STDOUT="m-old")
    assert (legacy.stdout, legacy.stderr) == ("m-old", "for-instance: SpotAsPriceGo,,cloud_essd")
    # other lines on stderr (a shell warning on the deployer) never read as another instance
    noisy = {
        **was,
        "PULUMI_COMMAND_STDERR": "bash: warning: setlocale: LC_ALL: cannot change locale\n" + was["PULUMI_COMMAND_STDERR"],
    }
    assert record("m-new", "NoSpot,,cloud_essd", **noisy).stdout == "m-old"
    assert record("m-new", "NoSpot,,cloud_essd", **{**was, "PULUMI_COMMAND_STDERR": "noise only"}).stdout == "m-old"
    # the same price limit written otherwise is the same instance (the provider gets the same float)
    limit = {"PULUMI_COMMAND_STDOUT": "m-old", "PULUMI_COMMAND_STDERR": "for-instance: SpotWithPriceLimit,1.80,cloud_essd"}
    assert record("m-new", "SpotWithPriceLimit,1.8,cloud_essd", **limit).stdout == "m-old"
    assert record("m-new", "SpotWithPriceLimit,1.9,cloud_essd", **limit).stdout == "m-new"
    empty = record("", "NoSpot,,cloud_essd")
    assert empty.returncode == 1 and empty.stdout == "" and "IMAGE is empty" in empty.stderr
