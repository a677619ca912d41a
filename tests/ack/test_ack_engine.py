"""ACK resources (issue 14): the engine's replace/update rules, the strict mocks' answers, SDK names.

Sources of the rules: tools/engine.py (terraform-provider-alicloud @81c43b6) and
/work/notes/ack-engine-facts.md.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pulumi
import pulumi_alicloud as alicloud
import pytest
from pulumi import _types
from pulumi.runtime import mocks as pulumi_mocks

from tools import engine, mocks
from tools.engine import DELETE, REPLACE, SAME, UPDATE, State
from tools.mocks import PlaceholderMocks

CLUSTER = "alicloud:cs/managedKubernetes:ManagedKubernetes"
POOL = "alicloud:cs/nodePool:NodePool"
TASK = "alicloud:ess/scheduledTask:ScheduledTask"
ARGS = {CLUSTER: alicloud.cs.ManagedKubernetesArgs, POOL: alicloud.cs.NodePoolArgs, TASK: alicloud.ess.ScheduledTaskArgs}


def diff(type_: str, old: dict, new: dict) -> engine.Change:
    return engine.diff_resource(State("urn:x", type_, "x", "i-1", old), State("urn:x", type_, "x", "i-1", new))


CLUSTER_IN = {
    "name": "gpu-k8s",
    "clusterSpec": "ack.pro.small",
    "version": "1.35.1-aliyun.1",
    "vswitchIds": ["vsw-a"],
    "podCidr": "172.20.0.0/16",
    "serviceCidr": "172.21.0.0/20",
    "newNatGateway": False,
    "slbInternetEnabled": True,
    "addons": [{"name": "flannel"}],
    "proxyMode": "ipvs",
    "tags": {"gpu-k8s": "ack"},
}
POOL_IN = {
    "clusterId": "c-1",
    "nodePoolName": "train",
    "vswitchIds": ["vsw-a"],
    "instanceTypes": ["ecs.gn7i-c8g1.2xlarge"],
    "desiredSize": "1",
    "instanceChargeType": "PostPaid",
    "spotStrategy": "NoSpot",
    "systemDiskCategory": "cloud_essd",
    "systemDiskSize": 120,
    "securityGroupIds": ["sg-1"],
    "keyName": "k",
    "labels": [{"key": "gpu-k8s/pool", "value": "train"}],
}
TASK_IN = {"scalingGroupId": "asg-1", "launchTime": "2026-11-30T05:00Z", "desiredCapacity": 0, "minValue": 0}

# (type, old inputs, changed inputs, op, keys, words the note must hold)
RULES = [
    # ManagedKubernetes: ForceNew (schema l.54-785)
    (CLUSTER, CLUSTER_IN, {"podCidr": "172.22.0.0/16"}, REPLACE, ("podCidr",), ""),
    (CLUSTER, CLUSTER_IN, {"serviceCidr": "172.23.0.0/20"}, REPLACE, ("serviceCidr",), ""),
    (CLUSTER, CLUSTER_IN, {"proxyMode": "iptables"}, REPLACE, ("proxyMode",), ""),
    (CLUSTER, CLUSTER_IN, {"profile": "Edge"}, REPLACE, ("profile",), ""),
    # ... in place
    (CLUSTER, CLUSTER_IN, {"version": "1.36.1-aliyun.1"}, UPDATE, ("version",), "UpgradeCluster"),
    (CLUSTER, CLUSTER_IN, {"vswitchIds": ["vsw-a", "vsw-b"]}, UPDATE, ("vswitchIds",), "control plane restarts"),
    (CLUSTER, CLUSTER_IN, {"clusterSpec": "ack.pro.xlarge"}, UPDATE, ("clusterSpec",), "no-op"),
    (CLUSTER, CLUSTER_IN, {"tags": {"gpu-k8s": "ack", "team": "a"}}, UPDATE, ("tags",), ""),
    (CLUSTER, CLUSTER_IN, {"deletionProtection": True}, UPDATE, ("deletionProtection",), ""),
    # ... create-only: the plan shows an update that changes nothing
    (CLUSTER, CLUSTER_IN, {"addons": [{"name": "terway-eniip"}]}, UPDATE, ("addons",), "no-op"),
    (CLUSTER, CLUSTER_IN, {"newNatGateway": True}, UPDATE, ("newNatGateway",), "no-op"),
    (CLUSTER, CLUSTER_IN, {"slbInternetEnabled": False}, UPDATE, ("slbInternetEnabled",), "no-op"),
    (
        CLUSTER,
        CLUSTER_IN,
        {"deleteOptions": [{"resourceType": "SLB", "deleteMode": "delete"}]},
        UPDATE,
        ("deleteOptions",),
        "at delete",
    ),
    # NodePool: ForceNew
    (POOL, POOL_IN, {"clusterId": "c-2"}, REPLACE, ("clusterId",), ""),
    (POOL, POOL_IN, {"securityGroupIds": ["sg-2"]}, REPLACE, ("securityGroupIds",), ""),
    (POOL, POOL_IN, {"type": "edge"}, REPLACE, ("type",), ""),
    # ... in place
    (POOL, POOL_IN, {"desiredSize": "2"}, UPDATE, ("desiredSize",), "scales"),
    (POOL, POOL_IN, {"instanceTypes": ["ecs.gn7i-c16g1.4xlarge"]}, UPDATE, ("instanceTypes",), "keep their type"),
    (POOL, POOL_IN, {"labels": [{"key": "gpu-k8s/pool", "value": "infer"}]}, UPDATE, ("labels",), "update_nodes"),
    (POOL, POOL_IN, {"spotStrategy": "SpotAsPriceGo"}, UPDATE, ("spotStrategy",), ""),
    (POOL, POOL_IN, {"systemDiskCategory": "cloud_auto"}, UPDATE, ("systemDiskCategory",), ""),
    (POOL, POOL_IN, {"vswitchIds": ["vsw-b"]}, UPDATE, ("vswitchIds",), ""),
    (POOL, POOL_IN, {"keyName": "k2"}, UPDATE, ("keyName",), ""),
    # ScheduledTask: nothing is ForceNew
    (TASK, TASK_IN, {"launchTime": "2026-12-01T05:00Z"}, UPDATE, ("launchTime",), "90 days"),
    (TASK, TASK_IN, {"scalingGroupId": "asg-2"}, UPDATE, ("scalingGroupId",), ""),
    (TASK, TASK_IN, {"desiredCapacity": 1}, UPDATE, ("desiredCapacity",), ""),
]


@pytest.mark.parametrize("type_,old,change,op,keys,note", RULES, ids=lambda v: v if isinstance(v, str) else None)
def test_a_change_replaces_or_updates_as_the_provider_schema_says(type_, old, change, op, keys, note):
    result = diff(type_, old, {**old, **change})
    assert (result.op, result.keys) == (op, keys)
    assert note in result.note
    if op == UPDATE and "no-op" not in note:
        assert "no-op" not in result.note  # a real update is never called a no-op


@pytest.mark.parametrize("type_,inputs", [(CLUSTER, CLUSTER_IN), (POOL, POOL_IN), (TASK, TASK_IN)])
def test_unchanged_inputs_are_the_same(type_, inputs):
    assert diff(type_, inputs, dict(reversed(list(inputs.items())))).op == SAME


def test_deleting_a_cluster_or_pool_says_what_else_goes():
    before = [State("urn::c", CLUSTER, "c", "<c id>", CLUSTER_IN), State("urn::p", POOL, "p", "<p id>", POOL_IN)]
    notes = {c.urn: (c.op, c.note) for c in engine.diff_states(before, [])}
    assert notes["urn::c"][0] == DELETE and "SLB" in notes["urn::c"][1] and "retain_resources" in notes["urn::c"][1]
    assert notes["urn::p"][0] == DELETE and "released" in notes["urn::p"][1]
    kept = State("urn::c", CLUSTER, "c", "<c id>", CLUSTER_IN, options={"retainOnDelete": True})
    assert engine.diff_states([kept], [])[0].note == "retained in the cloud (retain_on_delete)"


@pytest.mark.parametrize("type_", [CLUSTER, POOL, TASK])
def test_every_modelled_input_is_an_input_of_the_installed_sdk(type_):
    wire = set(_types.input_type_py_to_pulumi_names(ARGS[type_]).values())
    modelled = set(engine.FORCE_NEW[type_]) | set(engine.UPDATE_NOTES.get(type_, {}))
    assert modelled - wire == set()


def test_sdk_tokens_and_types_match_what_the_mocks_answer():
    def sdk(obj) -> str:
        # The module's text, not inspect.getsource: that parses the module with ast to find a
        # class, which CPython 3.11 can fail with "AST constructor recursion depth mismatch"
        # late in a long test session.
        return Path(inspect.getsourcefile(obj)).read_text()

    assert f"'{CLUSTER}'" in sdk(alicloud.cs.ManagedKubernetes)
    assert f"'{POOL}'" in sdk(alicloud.cs.NodePool)
    assert f"'{TASK}'" in sdk(alicloud.ess.ScheduledTask)
    assert "'alicloud:cs/getClusterCredential:getClusterCredential'" in sdk(alicloud.cs.get_cluster_credential_output)
    assert "'alicloud:cs/getKubernetesVersion:getKubernetesVersion'" in sdk(alicloud.cs.get_kubernetes_version_output)
    # desired_size is a string in the SDK (TypeString upstream), not an int
    assert "str" in str(inspect.signature(alicloud.cs.NodePoolArgs.__init__).parameters["desired_size"].annotation)


# --- the strict mocks ---------------------------------------------------------------------------


def call(m: PlaceholderMocks, token: str, **args) -> dict:
    return m.call(pulumi_mocks.MockCallArgs(token, args, ""))


def resource(m: PlaceholderMocks, typ: str, resource_name: str, inputs: dict) -> tuple[str, dict]:
    return m.new_resource(pulumi_mocks.MockResourceArgs(typ, resource_name, inputs))


def _labelled(m: PlaceholderMocks, value: object) -> None:
    """Every <...> string in ``value`` is a registered placeholder (or a resource id)."""
    if isinstance(value, dict):
        for v in value.values():
            _labelled(m, v)
    elif isinstance(value, list):
        for v in value:
            _labelled(m, v)
    elif isinstance(value, str) and value.startswith("<"):
        assert value in m.placeholders, value


def test_cluster_outputs_are_labelled_placeholders():
    m = PlaceholderMocks()
    rid, out = resource(m, CLUSTER, "gpu-k8s-ack", CLUSTER_IN)
    assert rid == "<gpu-k8s-ack id>" and rid in m.placeholders
    (conn,) = out["connections"]  # a list of one in the SDK (Sequence[ManagedKubernetesConnection])
    assert conn["apiServerInternet"] == f"https://{mocks.ACK_API_SERVER}:6443"
    assert conn["masterPublicIp"] == out["slbInternet"] == mocks.ACK_API_SERVER
    assert out["natGatewayId"] == ""  # newNatGateway false: ACK creates none
    for key in ("slbId", "vpcId", "workerRamRoleName", "securityGroupId", "slbIntranet"):
        assert out[key].startswith("<") and out[key] in m.placeholders
    _labelled(m, out)
    assert out["podCidr"] == CLUSTER_IN["podCidr"]  # inputs echo back


def test_cluster_without_public_slb_has_no_public_address_and_a_given_security_group_is_kept():
    m = PlaceholderMocks()
    _, out = resource(
        m, CLUSTER, "c", {**CLUSTER_IN, "slbInternetEnabled": False, "newNatGateway": True, "securityGroupId": "sg-9"}
    )
    (conn,) = out["connections"]
    assert conn["apiServerInternet"] == out["slbInternet"] == conn["masterPublicIp"] == ""
    assert mocks.ACK_API_SERVER not in m.placeholders
    assert out["natGatewayId"] == "<c NAT gateway id>" and out["securityGroupId"] == "sg-9"
    _labelled(m, out)


def test_pool_and_task_outputs():
    m = PlaceholderMocks()
    _, pool = resource(m, POOL, "train", POOL_IN)
    assert pool["scalingGroupId"] == "<train ESS scaling group id>" and pool["nodePoolId"] == "<train node pool id>"
    _labelled(m, pool)
    rid, task = resource(m, TASK, "train-ttl", {"scalingGroupId": pool["scalingGroupId"], "launchTime": "t"})
    assert rid in m.placeholders and task["scalingGroupId"] == pool["scalingGroupId"]


@pytest.mark.parametrize("public", [True, False])
def test_kubeconfig_points_at_the_clusters_api_server_placeholder(public):
    m = PlaceholderMocks()
    rid, _ = resource(m, CLUSTER, "c", {**CLUSTER_IN, "slbInternetEnabled": public})
    got = call(m, "alicloud:cs/getClusterCredential:getClusterCredential", clusterId=rid, temporaryDurationMinutes=60)
    server = mocks.ACK_API_SERVER if public else mocks.ACK_API_SERVER_PRIVATE
    assert f"server: https://{server}:6443" in got["kubeConfig"] and server in m.placeholders
    assert "PLACEHOLDER" in got["kubeConfig"] and got["clusterName"] == "c"
    assert "60 minutes" in m.placeholders[got["expiration"]]
    with pytest.raises(ValueError, match="clusterId"):
        call(m, "alicloud:cs/getClusterCredential:getClusterCredential")


def test_versions_come_from_the_dated_fixture():
    m = PlaceholderMocks()
    fixture = json.loads(mocks.ACK_VERSIONS.read_text())
    assert fixture["as_of"] and fixture["sources"]
    token = "alicloud:cs/getKubernetesVersion:getKubernetesVersion"
    every = call(m, token, clusterType="ManagedKubernetes", profile="Default")["metadatas"]
    assert [v["version"] for v in every] == [v["version"] for v in fixture["metadatas"]]
    for v in every:
        assert fixture["as_of"] in m.placeholders[v["version"]]
        assert v["runtimes"][0]["name"] == "containerd"
    one = call(m, token, clusterType="ManagedKubernetes", kubernetesVersion=every[-1]["version"])
    assert one["metadatas"] == [every[-1]]
    assert call(m, token, clusterType="ManagedKubernetes", kubernetesVersion="1.20.4-aliyun.1")["metadatas"] == []
    with pytest.raises(NotImplementedError, match="Serverless"):
        call(m, token, clusterType="ManagedKubernetes", profile="Serverless")


def test_an_unknown_invoke_still_fails():
    with pytest.raises(NotImplementedError, match="strict mocks"):
        call(PlaceholderMocks(), "alicloud:cs/getKubernetesAddons:getKubernetesAddons", clusterId="c")


@pulumi.runtime.test
def test_the_real_sdk_reads_the_mocked_outputs(pulumi_mocks_set):
    """Through the SDK classes: the output names the mocks set are the ones the SDK reads."""
    cluster = alicloud.cs.ManagedKubernetes(
        "ack", name="gpu-k8s", cluster_spec="ack.pro.small", vswitch_ids=["vsw-a"], new_nat_gateway=False
    )
    pool = alicloud.cs.NodePool("train", cluster_id=cluster.id, node_pool_name="train", desired_size="1")
    task = alicloud.ess.ScheduledTask("ttl", scaling_group_id=pool.scaling_group_id, launch_time="t", desired_capacity=0)
    cred = alicloud.cs.get_cluster_credential_output(cluster_id=cluster.id, temporary_duration_minutes=60)
    versions = alicloud.cs.get_kubernetes_version_output(cluster_type="ManagedKubernetes", profile="Default")

    def check(args):
        conn, sg, np_sg, task_sg, kubeconfig, metadatas = args
        assert conn[0]["api_server_internet"] == f"https://{mocks.ACK_API_SERVER}:6443"
        assert sg == "<ack security group id>"
        assert np_sg == task_sg == "<train ESS scaling group id>"
        assert f"https://{mocks.ACK_API_SERVER}:6443" in kubeconfig
        assert metadatas[0]["version"] and metadatas[0]["runtimes"][0]["name"] == "containerd"

    return pulumi.Output.all(
        cluster.connections,
        cluster.security_group_id,
        pool.scaling_group_id,
        task.scaling_group_id,
        cred.kube_config,
        versions.metadatas,
    ).apply(check)
