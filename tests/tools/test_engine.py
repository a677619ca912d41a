"""The offline engine model (tools/engine.py, pure) and the CLI's config typing (harness, plan)."""

from __future__ import annotations

import pytest

from tools import engine, harness, plan
from tools.engine import CREATE, DELETE, REPLACE, SAME, UPDATE, State

INSTANCE = "alicloud:ecs/instance:Instance"
REMOTE = "command:remote:Command"
POD = "kubernetes:core/v1:Pod"


def state(type_: str, inputs: dict, *, urn: str = "urn:x", options: dict | None = None, provider: str = "", id_: str = "i-1"):
    return State(urn, type_, urn.rsplit("::", 1)[-1], id_, inputs, {}, provider, options or {})


def diff(type_: str, old: dict, new: dict, **options) -> engine.Change:
    return engine.diff_resource(state(type_, old), state(type_, new, options=options))


POD_SPEC = {"containers": [{"name": "t", "image": "a:1"}], "nodeSelector": {"h": "n"}, "tolerations": []}

# (type, old inputs, new inputs, op, keys): one row per rule of the reference file.
RULES = [
    # pulumi-command (§2): triggers replace, anything else updates (re-runs create)
    (REMOTE, {"create": "a", "triggers": ["h"]}, {"create": "a", "triggers": ["h2"]}, REPLACE, ("triggers",)),
    (REMOTE, {"create": "a", "triggers": ["h"]}, {"create": "b", "triggers": ["h"]}, UPDATE, ("create",)),
    (REMOTE, {"connection": {"host": "1"}}, {"connection": {"host": "2"}}, UPDATE, ("connection",)),
    (
        "command:local:Command",
        {"create": "date", "triggers": ["4"]},
        {"create": "date", "triggers": ["6"]},
        REPLACE,
        ("triggers",),
    ),
    # alicloud ForceNew (§1)
    (
        "alicloud:vpc/switch:Switch",
        {"zoneId": "h", "vswitchName": "s"},
        {"zoneId": "i", "vswitchName": "s"},
        REPLACE,
        ("zoneId",),
    ),
    ("alicloud:vpc/switch:Switch", {"vswitchName": "s"}, {"vswitchName": "t"}, UPDATE, ("vswitchName",)),
    ("alicloud:vpc/network:Network", {"cidrBlock": "10.0.0.0/16"}, {"cidrBlock": "10.1.0.0/16"}, UPDATE, ("cidrBlock",)),
    ("alicloud:ecs/securityGroup:SecurityGroup", {"vpcId": "v1"}, {"vpcId": "v2"}, REPLACE, ("vpcId",)),
    ("alicloud:ecs/securityGroupRule:SecurityGroupRule", {"portRange": "22/22"}, {"portRange": "23/23"}, REPLACE, ("portRange",)),
    ("alicloud:ecs/securityGroupRule:SecurityGroupRule", {"description": "a"}, {"description": "b"}, UPDATE, ("description",)),
    ("alicloud:ecs/ecsKeyPair:EcsKeyPair", {"keyPairName": "a"}, {"keyPairName": "b"}, REPLACE, ("keyPairName",)),
    ("alicloud:ecs/ecsKeyPair:EcsKeyPair", {"publicKey": "a"}, {"publicKey": "b"}, UPDATE, ("publicKey",)),
    (INSTANCE, {"imageId": "m-1"}, {"imageId": "m-2"}, UPDATE, ("imageId",)),
    (INSTANCE, {"systemDiskCategory": "cloud_essd"}, {"systemDiskCategory": "cloud_ssd"}, REPLACE, ("systemDiskCategory",)),
    (INSTANCE, {"spotStrategy": "NoSpot"}, {"spotStrategy": "SpotAsPriceGo"}, REPLACE, ("spotStrategy",)),
    (INSTANCE, {"autoReleaseTime": "t1"}, {"autoReleaseTime": "t2"}, UPDATE, ("autoReleaseTime",)),
    (INSTANCE, {"instanceType": "a"}, {"instanceType": "b"}, UPDATE, ("instanceType",)),
    # tls / random (§4)
    ("tls:index/privateKey:PrivateKey", {"rsaBits": 2048}, {"rsaBits": 4096}, REPLACE, ("rsaBits",)),
    ("random:index/randomString:RandomString", {"length": 6}, {"length": 8}, REPLACE, ("length",)),
    # kubernetes (§3)
    (POD, {"metadata": {"name": "a"}}, {"metadata": {"name": "b"}}, REPLACE, ("metadata.name",)),
    (POD, {"metadata": {"labels": {"a": "1"}}}, {"metadata": {"labels": {"a": "2"}}}, UPDATE, ("metadata.labels",)),
    (
        POD,
        {"spec": POD_SPEC},
        {"spec": {**POD_SPEC, "containers": [{"name": "t", "image": "a:2"}]}},
        REPLACE,
        ("spec.containers",),
    ),
    (POD, {"spec": POD_SPEC}, {"spec": {**POD_SPEC, "nodeSelector": {"h": "m"}}}, REPLACE, ("spec.nodeSelector",)),
    (POD, {"spec": POD_SPEC}, {"spec": {**POD_SPEC, "tolerations": [{"key": "x"}]}}, UPDATE, ("spec.tolerations",)),
    (
        "kubernetes:apps/v1:DaemonSet",
        {"spec": {"selector": {"a": 1}}},
        {"spec": {"selector": {"a": 2}}},
        REPLACE,
        ("spec.selector",),
    ),
    (
        "kubernetes:apps/v1:DaemonSet",
        {"spec": {"template": {"a": 1}}},
        {"spec": {"template": {"a": 2}}},
        UPDATE,
        ("spec.template",),
    ),
    ("kubernetes:core/v1:ConfigMap", {"data": {"a": "1"}}, {"data": {"a": "2"}}, REPLACE, ("data.a",)),
    (
        "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding",
        {"roleRef": {"n": 1}},
        {"roleRef": {"n": 2}},
        REPLACE,
        ("roleRef.n",),
    ),
    (
        "kubernetes:core/v1:NodePatch",
        {"metadata": {"name": "n", "labels": {"a": "1"}}},
        {"metadata": {"name": "n", "labels": {}}},
        UPDATE,
        ("metadata.labels",),
    ),
    ("kubernetes:core/v1:NodePatch", {"metadata": {"name": "n"}}, {"metadata": {"name": "m"}}, REPLACE, ("metadata.name",)),
    ("pulumi:providers:kubernetes", {"kubeconfig": "a"}, {"kubeconfig": "b"}, REPLACE, ("kubeconfig",)),
    # nothing changed
    (INSTANCE, {"imageId": "m-1", "tags": {"a": "1"}}, {"tags": {"a": "1"}, "imageId": "m-1"}, SAME, ()),
]


@pytest.mark.parametrize("type_,old,new,op,keys", RULES)
def test_rules_from_the_reference(type_, old, new, op, keys):
    change = diff(type_, old, new)
    assert (change.op, change.keys) == (op, keys)


def test_an_in_place_image_change_is_flagged_destructive():
    change = diff(INSTANCE, {"imageId": "m-1"}, {"imageId": "m-2"})
    assert change.op == UPDATE and change.note.startswith("DESTRUCTIVE") and "ReplaceSystemDisk" in change.note
    assert "nothing happens" not in diff("alicloud:ecs/ecsKeyPair:EcsKeyPair", {"publicKey": "a"}, {"publicKey": "b"}).note
    assert "no-op" in diff("alicloud:ecs/ecsKeyPair:EcsKeyPair", {"publicKey": "a"}, {"publicKey": "b"}).note


def test_ignore_changes_keeps_the_old_value():
    assert diff(INSTANCE, {"imageId": "m-1"}, {"imageId": "m-2"}, ignoreChanges=["imageId"]).op == SAME
    # only the listed property: another change still shows
    change = diff(
        INSTANCE, {"imageId": "m-1", "instanceType": "a"}, {"imageId": "m-2", "instanceType": "b"}, ignoreChanges=["imageId"]
    )
    assert (change.op, change.keys) == (UPDATE, ("instanceType",))
    # nested paths too
    old, new = {"metadata": {"labels": {"a": "1"}}}, {"metadata": {"labels": {"a": "2"}}}
    assert diff(POD, old, new, ignoreChanges=["metadata.labels"]).op == SAME


def test_replace_on_changes_turns_an_update_under_the_path_into_a_replace():
    old, new = {"spec": POD_SPEC}, {"spec": {**POD_SPEC, "tolerations": [{"key": "x"}]}}
    assert diff(POD, old, new).op == UPDATE
    change = diff(POD, old, new, replaceOnChanges=["spec"], deleteBeforeReplace=True)
    assert (change.op, change.keys) == (REPLACE, ("spec.tolerations",)) and "delete_before_replace" in change.note
    assert diff(POD, {"metadata": {"labels": {}}}, {"metadata": {"labels": {"a": "b"}}}, replaceOnChanges=["spec"]).op == UPDATE


def test_states_diff_lists_every_resource_once_with_provider_cascade_and_deletes():
    p = "urn:pulumi:dev::gpu-k8s::pulumi:providers:kubernetes::k8s"
    before = [
        state("pulumi:providers:kubernetes", {"kubeconfig": "[secret aaa]"}, urn=p, id_="<k8s id>"),
        state(POD, {"metadata": {"name": "p"}}, urn="urn::pod", provider=f"{p}::<k8s id>"),
        state(REMOTE, {"create": "x"}, urn="urn::gone"),
        state(REMOTE, {"create": "y"}, urn="urn::kept"),
    ]
    after = [
        state("pulumi:providers:kubernetes", {"kubeconfig": "[secret bbb]"}, urn=p, id_="<k8s id #2>"),
        state(POD, {"metadata": {"name": "p"}}, urn="urn::pod", provider=f"{p}::<k8s id #2>"),
        state(REMOTE, {"create": "y"}, urn="urn::kept"),
        state(REMOTE, {"create": "z"}, urn="urn::new"),
    ]
    changes = {c.urn: (c.op, c.keys) for c in engine.diff_states(before, after)}
    assert changes == {
        p: (REPLACE, ("kubeconfig",)),
        "urn::pod": (REPLACE, ("provider",)),
        "urn::kept": (SAME, ()),
        "urn::new": (CREATE, ()),
        "urn::gone": (DELETE, ()),
    }
    assert engine.summary(engine.diff_states(before, after)) == {SAME: 1, UPDATE: 0, REPLACE: 2, CREATE: 1, DELETE: 1}


def test_paths_round_trip():
    assert engine.split_path("spec.containers[0].image") == ("spec", "containers", 0, "image")
    assert engine.join_path(("spec", "containers", 0, "image")) == "spec.containers[0].image"
    assert engine.changed_paths({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == [("a", 1, "b")]
    assert engine.changed_paths({"a": [1]}, {"a": [1, 2]}) == [("a",)]


# --- Defect 6: config typed as the Pulumi CLI types it ----------------------------------


@pytest.mark.parametrize(
    "key,value,ok",
    [
        ("gpu-k8s:allowedCidrs", '["203.0.113.4/32"]', False),  # `pulumi config set k '["..."]'` stores text
        ("gpu-k8s:allowedCidrs", ["203.0.113.4/32"], True),  # a YAML list, or --path
        ("gpu-k8s:allowedCidrs", [1], False),
        ("gpu-k8s:nodeCount", "2", True),
        ("gpu-k8s:nodeCount", 2.0, True),  # whole float
        ("gpu-k8s:nodeCount", "2.5", False),
        ("gpu-k8s:nodeCount", "two", False),
        ("gpu-k8s:spot", "true", True),
        ("gpu-k8s:spot", True, True),
        ("gpu-k8s:spot", "yes", False),
        ("gpu-k8s:ttlHours", ["4"], False),  # type: string
        ("gpu-k8s:nodePools", '[{"name": "a"}]', True),  # `value:` form: not explicitly typed, not checked
    ],
)
def test_config_types_like_the_cli(key, value, ok):
    if ok:
        harness.check_config_types("dev", {key: value})
        return
    with pytest.raises(harness.ConfigTypeError) as err:
        harness.check_config_types("dev", {key: value})
    short = key.split(":", 1)[1]
    assert str(err.value).startswith(f"Stack 'dev' with configuration key '{short}' must be of type '")


def test_a_json_string_for_an_array_key_is_refused_as_the_cli_does():
    # Fails on the old harness, which parsed the string and accepted it.
    with pytest.raises(harness.ConfigTypeError, match=r"must be of type 'array<string>'"):
        harness.run_program("dev", {"gpu-k8s:allowedCidrs": '["203.0.113.4/32"]'})


def test_a_plain_string_for_an_array_in_the_stack_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((harness.ROOT / "Pulumi.yaml").read_text())
    stack = tmp_path / "stacks" / "Pulumi.s.yaml"
    stack.write_text("config:\n  gpu-k8s:allowedCidrs: '[\"203.0.113.4/32\"]'\n")
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    refused = "Stack 's' with configuration key 'allowedCidrs' must be of type 'array<string>'"
    with pytest.raises(harness.ConfigTypeError, match=refused):
        harness.effective_config("s")
    # A YAML list is an object; True and 2.0 are a YAML bool and number (stored "true", "2").
    stack.write_text("config:\n  gpu-k8s:allowedCidrs: [203.0.113.4/32]\n  gpu-k8s:spot: True\n  gpu-k8s:nodeCount: 2.0\n")
    harness.effective_config("s")
    # `yes` is text to the CLI's YAML decoder (not YAML 1.1's bool): not a boolean.
    stack.write_text("config:\n  gpu-k8s:spot: yes\n")
    with pytest.raises(harness.ConfigTypeError, match="'spot' must be of type 'boolean'"):
        harness.effective_config("s")


def test_config_path_builds_lists_and_maps_like_pulumi_config_set_path():
    values: dict = {}
    for text in ("allowedCidrs[0]=203.0.113.4/32", "allowedCidrs[1]=auto", "nodePools[0].name=a", "nodePools[0].count=2"):
        plan.apply_path_override(values, text)
    plan.apply_path_override(values, "nodePools[0].spot=true")
    plan.apply_path_override(values, "nodePools[0].zip=0123")
    assert values == {
        "gpu-k8s:allowedCidrs": ["203.0.113.4/32", "auto"],
        "gpu-k8s:nodePools": [{"name": "a", "count": 2, "spot": True, "zip": "0123"}],
    }
    with pytest.raises(plan.PlanError, match="array index out of range"):
        plan.apply_path_override(values, "allowedCidrs[5]=x")
    assert plan.parse_override('allowedCidrs=["203.0.113.4/32"]') == ("gpu-k8s:allowedCidrs", '["203.0.113.4/32"]')


def test_config_path_edits_the_stack_files_value_as_the_cli_does():
    """`pulumi config set --path 'nodePools[1].count' 1` changes one field of the stack's list."""
    values: dict = {}
    plan.apply_path_override(values, "nodePools[1].count=1", existing=lambda key: plan._stored_object("mixed", key))
    assert [(p["name"], p["count"]) for p in values["gpu-k8s:nodePools"]] == [("train", 2), ("infer", 1)]
    assert plan._stored_object("dev", "gpu-k8s:allowedCidrs") is None  # not in the stack file: a new list
