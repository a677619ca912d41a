"""gpu-k8s:cluster ack: the ACK backend under the strict mocks, its config and its pure helpers."""

from __future__ import annotations

import inspect
import re
from decimal import Decimal

import pulumi_alicloud as alicloud
import pytest
from helpers import env_of, kinds, run_stack, shipped

from components import backend
from components.ack import backend as ack
from components.config import AckSettings, NodePool
from components.facts import ack as ack_support
from components.facts import catalog
from tools import engine
from tools.harness import is_secret, reveal, run_program
from tools.mocks import PlaceholderMocks

CLUSTER = "alicloud:cs/managedKubernetes:ManagedKubernetes"
NODE_POOL = "alicloud:cs/nodePool:NodePool"
SCHEDULED_TASK = "alicloud:ess/scheduledTask:ScheduledTask"
T4 = catalog.profile_for("ecs.gn6i-c4g1.xlarge")
SETTINGS = AckSettings(cluster_spec="ack.pro.small", kubernetes_version="1.36.1-aliyun.1", driver_version="535.161.07")
T0 = 1_790_000_000  # a fixed clock: 2026-09-21T14:13:20Z (the mocks' and the TTL check's "now")


@pytest.fixture(scope="module")
def ack_run():
    return run_stack("ack", mocks=PlaceholderMocks(lambda: T0))


def test_ack_stack_is_a_managed_cluster_with_a_gpu_node_pool(ack_run):
    (cluster,) = ack_run.of_type(CLUSTER)
    inputs = reveal(cluster.inputs)
    assert inputs["clusterSpec"] == "ack.pro.small" and inputs["version"] == "1.36.1-aliyun.1"
    assert inputs["addons"] == [{"name": "flannel"}] and inputs["podCidr"] == "10.244.0.0/16"
    assert inputs["serviceCidr"] == ack_support.SERVICE_CIDR
    # No NAT gateway or EIP to bill: the nodes get their own public IPs.
    assert inputs["newNatGateway"] is False and inputs["slbInternetEnabled"] is True
    assert inputs["deletionProtection"] is False
    # Everything ACK creates that bills after the cluster (logs, ingress LBs) goes with it.
    assert {o["resourceType"]: o["deleteMode"] for o in inputs["deleteOptions"]} == dict.fromkeys(
        ("SLB", "ALB", "SLS_Data", "SLS_ControlPlane"), "delete"
    )
    (pool,) = ack_run.of_type(NODE_POOL)
    p = reveal(pool.inputs)
    assert p["instanceTypes"] == ["ecs.gn6i-c4g1.xlarge"] and p["desiredSize"] == "1"
    assert p["instanceChargeType"] == "PostPaid" and p["spotStrategy"] == "NoSpot"
    # ACK 1.35+ kubelets refuse cgroup v1: the container-optimized Alibaba Cloud Linux 3 (cgroup v2).
    assert p["systemDiskCategory"] == "cloud_essd" and p["imageType"] == "AliyunLinux3ContainerOptimized"
    assert p["clusterId"] == cluster.id
    labels = {label["key"]: label["value"] for label in p["labels"]}
    assert labels[backend.POOL_LABEL] == "gpu" and labels["nvidia.com/gpu.present"] == "true"
    # The driver is always pinned: ACK changes its own default over time.
    assert labels[ack.DRIVER_LABEL] == "535.161.07"


def test_ack_installs_nothing_twice_and_never_uses_ssh(ack_run):
    """ACK brings the driver, runtime, flannel and its device plugin: no SSH step, no plugin of ours."""
    types = {r.type for r in ack_run.resources}
    assert not {t for t in types if t.startswith("command:remote:")}
    # The only DaemonSet is the optional GPU metrics exporter (gpu-k8s:monitoring), no device plugin.
    assert [d.inputs["metadata"]["name"] for d in kinds(ack_run, "DaemonSet")] == ["dcgm-exporter"]
    assert not [r for r in ack_run.resources if r.type == "alicloud:ecs/instance:Instance"]
    assert not [r for r in ack_run.resources if r.type.startswith("alicloud:ecs/securityGroup")]
    assert not kinds(ack_run, "RuntimeClass")


def test_ack_gpu_checks_read_the_cluster_from_here_with_a_secret_kubeconfig(ack_run):
    checks = [r for r in ack_run.resources if r.type == "command:local:Command" and "-smoke-" in r.name]
    assert {c.name for c in checks} == {"gpu-k8s-smoke-gpu-allocatable", "gpu-k8s-smoke-gpu-test-result"}
    for check in checks:
        assert is_secret(check.inputs["stdin"])  # the kubeconfig, never on the command line
        assert "kubeconfig" not in reveal(check.inputs["create"]).lower().replace("with-kubeconfig.sh", "")
        env = env_of(check)
        assert env["NODE_SETUP"] == "ack"
    allocatable = next(c for c in checks if c.name.endswith("-gpu-allocatable"))
    env = env_of(allocatable)
    assert env["GPU_NODE_GROUPS"] == "gpu-k8s/pool=gpu:1" and "GPU_NODES" not in env
    # The pools may still be adding nodes and ACK installing their driver: a longer wait than kubeadm's.
    assert env["TIMEOUT_SECONDS"] == "1500"
    assert env["PLUGIN_NAMESPACE"] == "kube-system" and env["PLUGIN_SELECTOR"] == "component=nvidia-device-plugin"
    assert is_secret(ack_run.outputs["kubeconfig"])
    (provider,) = ack_run.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"]) and "<ack-api-server" in reveal(provider.inputs["kubeconfig"])


def test_ack_test_pods_select_the_pool_and_spread_one_per_node():
    run = run_stack("ack", nodePools=[{"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2}])
    pods = kinds(run, "Pod")
    assert len(pods) == 2
    for pod in pods:
        spec = pod.inputs["spec"]
        assert spec["nodeSelector"] == {backend.POOL_LABEL: "train"}
        term = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert pod.inputs["metadata"]["labels"][term["labelSelector"]["matchLabels"].popitem()[0]] == "train"
    assert len({p.inputs["metadata"]["name"] for p in pods}) == 2
    allocatable = next(r for r in run.resources if r.name.endswith("-gpu-allocatable"))
    assert env_of(allocatable)["GPU_NODE_GROUPS"] == "gpu-k8s/pool=train:2"


def test_ack_outputs_match_the_kubeadm_stack(ack_run):
    kubeadm = shipped("p4")
    assert set(ack_run.outputs) == set(kubeadm.outputs)
    assert ack_run.outputs["cluster"] == "ack" and kubeadm.outputs["cluster"] == "kubeadm"
    assert ack_run.outputs["kubeconfig"] and ack_run.outputs["gpuTest"]["test"] == "vectoradd"
    rows = ack_run.outputs["gpuNodes"]
    assert [r["pool"] for r in rows] == ["gpu"] and rows[0]["driver"].startswith("tesla 535.161.07")


def test_ack_cost_names_what_the_ttl_does_not_stop(ack_run):
    cost = ack_run.outputs["cost"]
    fees = {f["item"]: f["hourly"] for f in cost["clusterFees"]}
    nat = "NAT gateway made by ACK, with its EIP (<nat-gateway: found after the ACK cluster is created, if ACK made one>)"
    assert fees == {
        "cluster management fee (ACK Pro)": "0.64",
        "API server load balancer (CLB)": "0.147",
        "API server public endpoint (EIP)": "0.02",
        nat: "0.215",  # offline: whether ACK makes one is known only after create (labelled placeholder)
    }
    assert "until `make down`" in cost["afterAutoRelease"] and "best-effort" in cost["afterAutoRelease"]
    assert "until `make down`" in cost["maxBeforeAutoRelease"]
    none_found = PlaceholderMocks()
    none_found.nat_gateways = []
    basic = run_stack("ack", none_found, ackClusterSpec="ack.standard").outputs["cost"]
    assert [f["item"] for f in basic["clusterFees"]] == ["API server load balancer (CLB)", "API server public endpoint (EIP)"]
    assert basic["natGateway"].startswith("none in the stack's VPC")
    made = PlaceholderMocks()
    made.nat_gateways = ["ngw-bp1example"]
    fees = run_stack("ack", made).outputs["cost"]["clusterFees"]
    assert {"item": f"{ack_support.NAT_GATEWAY_FEE[0]} (ngw-bp1example)", "hourly": "0.215"} == {
        k: v for k, v in fees[-1].items() if k != "source"
    }
    # The catalog's 11.63 for the T4 node + 0.64 + 0.147 + 0.02 + a NAT 0.215; LCU and CU not included.
    assert cost["hourlyTotal"] == "at least 12.65"


def test_ack_ttl_is_a_scale_to_zero_task_per_pool(ack_run):
    (task,) = ack_run.of_type(SCHEDULED_TASK)
    t = reveal(task.inputs)
    assert t["desiredCapacity"] == 0 and t["minValue"] == 0 and "maxValue" not in t
    (pool,) = ack_run.of_type(NODE_POOL)
    assert t["scalingGroupId"] == pool.outputs["scalingGroupId"]
    # 4 h after the anchor (T0), on a minute not ending in 0, in ESS's format
    assert t["launchTime"] == "2026-09-21T18:14Z"
    assert "BEST-EFFORT" in ack_run.outputs["autoReleaseTime"] and "bill until `make down`" in ack_run.outputs["autoReleaseTime"]
    off = run_stack("ack", ttlHours="0")
    assert not off.of_type(SCHEDULED_TASK) and off.outputs["autoReleaseTime"].startswith("off")


def test_ack_second_up_with_the_same_config_changes_nothing(ack_run, monkeypatch):
    again = run_program("ack", mocks=PlaceholderMocks(lambda: T0 + 3600), previous=ack_run)
    assert {c.op for c in again.changes} == {engine.SAME}
    # What this guards: a temporary kubeconfig (a new certificate at every read) would change
    # the provider on every `up`, and the checks, which read the cluster with the credential
    # they are given (no ignore_changes on stdin: after a cluster replacement they must read the
    # new cluster), would run again each time: the default is the long-lived one.
    monkeypatch.setattr(ack_support, "KUBECONFIG_MINUTES", 60)
    first = run_program("ack", mocks=PlaceholderMocks(lambda: T0))
    second = run_program("ack", mocks=PlaceholderMocks(lambda: T0 + 3600), previous=first)
    touched = {c.name: c.keys for c in second.changes if c.op != engine.SAME}
    assert "gpu-k8s-k8s" in touched
    assert touched["gpu-k8s-smoke-gpu-allocatable"] == touched["gpu-k8s-smoke-gpu-test-result"] == ("stdin",)


def test_ack_up_after_the_ttl_stops_with_what_to_do(ack_run):
    """The one-time task has fired: an `up` (e.g. after --refresh) must not bring nodes back without a TTL."""
    with pytest.raises(ack.TtlPassed, match=r"ended at 2026-09-21T18:14:00Z.*make extend"):
        run_program("ack", mocks=PlaceholderMocks(lambda: T0 + 5 * 3600), previous=ack_run)
    # make extend replaces the anchors: a new TTL from now, and the run goes through.
    extended = run_program(
        "ack",
        mocks=PlaceholderMocks(lambda: T0 + 5 * 3600),
        previous=ack_run,
        replace=[r.urn for r in ack_run.resources if r.name.endswith("-ttl-anchor")],
    )
    assert not extended.errors
    (task,) = extended.of_type(SCHEDULED_TASK)
    assert task.inputs["launchTime"] == "2026-09-21T23:14Z"  # T0 + 5 h + 4 h
    assert next(c for c in extended.changes if c.name == "gpu-k8s-gpu-scale-to-zero").op == engine.UPDATE


def test_ack_pool_size_change_renews_that_pools_test_pods():
    """ACK picks which node leaves: every pod of the pool is renamed, so none waits on a removed node."""
    two = [{"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2}]
    first = run_program("ack", {"gpu-k8s:nodePools": two}, mocks=PlaceholderMocks(lambda: T0))
    one = [{**two[0], "count": 1}]
    second = run_program("ack", {"gpu-k8s:nodePools": one}, mocks=PlaceholderMocks(lambda: T0 + 600), previous=first)
    ops = {c.name: c.op for c in second.changes}
    assert ops["gpu-k8s-smoke-pod-train-0"] == engine.REPLACE and ops["gpu-k8s-smoke-pod-train-1"] == engine.DELETE
    assert ops["gpu-k8s-train-pool"] == engine.UPDATE and ops["gpu-k8s-smoke-gpu-test-result"] == engine.UPDATE
    # kubeadm names its nodes: the pods of the nodes that stay keep their names.
    k1 = run_program("mixed", mocks=PlaceholderMocks(lambda: T0))
    k2 = run_program(
        "mixed",
        {
            "gpu-k8s:nodePools": '[{"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 1},'
            ' {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4}]'
        },
        mocks=PlaceholderMocks(lambda: T0 + 600),
        previous=k1,
    )
    assert {c.name: c.op for c in k2.changes}["gpu-k8s-smoke-pod-train-0"] == engine.SAME


def test_ack_scaling_a_pool_updates_it_in_place(ack_run):
    more = run_program(
        "ack",
        {"gpu-k8s:nodePools": '[{"name": "gpu", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2}]'},
        mocks=PlaceholderMocks(lambda: T0 + 3600),
        previous=ack_run,
    )
    changed = {c.name: (c.op, c.keys) for c in more.changes if c.op != engine.SAME}
    assert changed["gpu-k8s-gpu-pool"] == (engine.UPDATE, ("desiredSize",))
    assert not [c for c in more.changes if c.op == engine.REPLACE and c.type in (CLUSTER, NODE_POOL)]


def _wire_names(args_class) -> set[str]:
    """The camelCase input names of an SDK Args class, as the engine receives them."""
    names = set(inspect.signature(args_class.__init__).parameters) - {"self", "__self__"}
    return {"".join(w.capitalize() if i else w for i, w in enumerate(n.split("_"))) for n in names}


def test_nested_resource_arguments_match_the_installed_sdk():
    """The SDK's constructors reject an unknown top-level argument, but a plain dict inside a list
    (labels, addons, delete options, spot limits) reaches the engine unchecked: its keys must be
    the fields of the SDK's Args type, or the provider ignores or refuses them at deploy time."""
    run = run_stack("ack", spot="true", spotPriceLimit="3.5")
    nested = {
        CLUSTER: {
            "addons": alicloud.cs.ManagedKubernetesAddonArgs,
            "deleteOptions": alicloud.cs.ManagedKubernetesDeleteOptionArgs,
        },
        NODE_POOL: {"labels": alicloud.cs.NodePoolLabelArgs, "spotPriceLimits": alicloud.cs.NodePoolSpotPriceLimitArgs},
    }
    seen = set()
    for r in run.resources:
        for key, args_class in nested.get(r.type, {}).items():
            items = reveal(r.inputs[key])
            assert items and all(set(item) <= _wire_names(args_class) for item in items), (r.type, key, items)
            seen.add(key)
    assert seen == {"addons", "deleteOptions", "labels", "spotPriceLimits"}
    (pool,) = run.of_type(NODE_POOL)
    assert reveal(pool.inputs["spotPriceLimits"]) == [{"instanceType": "ecs.gn6i-c4g1.xlarge", "priceLimit": "3.5"}]
    assert reveal(pool.inputs["spotStrategy"]) == "SpotWithPriceLimit"


# --- bad input: refused before anything is created --------------------------------------


@pytest.mark.parametrize(
    ("stack", "overrides", "key", "words"),
    [
        ("dev", {"cluster": "ack"}, "gpu-k8s:instanceType", "vGPU family"),
        ("ack", {"ackKubernetesVersion": "1.34.1-aliyun.1"}, "gpu-k8s:ackKubernetesVersion", "1.34 is out of support"),
        ("ack", {"ackKubernetesVersion": "1.36.1"}, "gpu-k8s:ackKubernetesVersion", "not an ACK version string"),
        ("ack", {"ackNvidiaDriverVersion": "470.82.01"}, "gpu-k8s:ackNvidiaDriverVersion", "silently"),
        ("ack", {"ackClusterSpec": "ack.pro.huge"}, "gpu-k8s:ackClusterSpec", "ack.pro.small"),
        ("ack", {"driverVersion": "550.144.03"}, "gpu-k8s:driverVersion", "ackNvidiaDriverVersion"),
        ("ack", {"controlPlaneInstanceType": "ecs.g7.large"}, "gpu-k8s:controlPlaneInstanceType", "ACK's GPU node image"),
        ("ack", {"timeSlicingReplicas": "2"}, "gpu-k8s:timeSlicingReplicas", "device plugin"),
        ("ack", {"allowedCidrs": ["203.0.113.7/32"]}, "gpu-k8s:allowedCidrs", "gpu-k8s:cluster"),
        ("ack", {"ttlHours": "2200"}, "gpu-k8s:ttlHours", "90 days"),
        ("ack", {"ttlHours": "1"}, "gpu-k8s:ttlHours", "in the future"),
        ("ack", {"podCidr": "172.21.0.0/16"}, "gpu-k8s:podCidr", "172.21.0.0/20"),
        ("dev", {"ackClusterSpec": "ack.standard"}, "gpu-k8s:ackClusterSpec", "ack only"),
        ("dev", {"cluster": "eks"}, "gpu-k8s:cluster", "kubeadm, ack"),
        (
            "ack",
            {"smokeTest": "tensorflow", "smokeTestImage": "tensorflow/tensorflow:2.16.1-gpu"},
            "gpu-k8s:smokeTestImage",
            "ackNvidiaDriverVersion",
        ),
        (
            "ack",
            {"smokeTest": "tensorflow", "smokeTestImage": "tensorflow/tensorflow:2.16.1-gpu"},
            "gpu-k8s:smokeTestImage",
            "ACK offers: 570.169, 570.133.20",
        ),
    ],
)
def test_bad_ack_input_is_one_clear_error(stack, overrides, key, words):
    from components.config import ConfigError

    with pytest.raises(ConfigError) as err:
        run_stack(stack, **overrides)
    assert str(err.value).startswith(key), str(err.value)
    assert words in " ".join(str(err.value).split()), str(err.value)


def test_a_newer_driver_lets_the_newer_cuda_image_run():
    run = run_stack(
        "ack", smokeTest="tensorflow", smokeTestImage="tensorflow/tensorflow:2.16.1-gpu", ackNvidiaDriverVersion="550.144.03"
    )
    assert run.outputs["gpuTest"]["image"] == "tensorflow/tensorflow:2.16.1-gpu"


# --- pure helpers ---------------------------------------------------------------------


def test_pool_labels_and_scale_to_zero_time():
    pool = NodePool(name="train", instance_type="ecs.gn6i-c4g1.xlarge", count=2, profile=T4)
    labels = {x["key"]: x["value"] for x in ack.pool_labels(pool, SETTINGS)}
    assert labels == {
        "gpu-k8s/pool": "train",
        "gpu-k8s/driver": "tesla",
        "gpu-k8s/gpu-kind": "compute",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "Tesla-T4",
        "ack.aliyun.com/nvidia-driver-version": "535.161.07",
    }
    assert ack.scale_to_zero_time("2026-11-29T08:31:00Z") == "2026-11-29T08:31Z"
    now = 1_795_000_000.0  # 2026-11-18T...: the release time below is 11 days ahead
    assert ack.future_scale_to_zero_time("2026-11-29T08:31:00Z", "gpu", now) == "2026-11-29T08:31Z"
    with pytest.raises(ack.TtlPassed, match="node pool gpu ended at 2026-11-29T08:31:00Z"):
        ack.future_scale_to_zero_time("2026-11-29T08:31:00Z", "gpu", 1_796_000_000.0)
    # Unique per scaling group (ESS wants names unique in the region and account), at most 40 characters.
    assert ack.task_name("gpu", "asg-bp1aaa") != ack.task_name("gpu", "asg-bp1bbb")
    assert ack.task_name("gpu", "asg-bp1aaa").startswith("gpu-k8s-ttl-gpu-")
    # Cluster names: unique per deployment (ACK refuses a duplicate name in the account and region).
    assert ack.cluster_name("ack", "vsw-1") != ack.cluster_name("ack", "vsw-2")
    assert ack.cluster_name("ack", "vsw-1").startswith("gpu-k8s-ack-")
    assert len(ack.task_name("a-sixteen-char-pool-name", "asg-bp1aaa")) <= 40


def test_api_endpoint_reads_the_connections_list():
    assert ack._api_server_internet([{"api_server_internet": "https://203.0.113.5:6443"}]) == "https://203.0.113.5:6443"
    assert ack._api_server_internet([]) == "" and ack._api_server_internet(None) == ""


def test_ack_support_refuses_vgpu_and_unknown_drivers():
    assert ack_support.pool_problem(T4, "535.161.07") is None
    assert "vGPU" in ack_support.pool_problem(catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge"), "535.161.07")
    assert "does not offer" in ack_support.pool_problem(T4, "535.129.03")
    check = ack_support.check_kubernetes_version
    assert check("1.36.1-aliyun.1") == ("known", "")
    # A patch ACK added after the dated list is planned with a warning; an ended minor or a bad shape is refused.
    assert check("1.35.9-aliyun.1")[0] == "newer" and check("1.37.0-aliyun.1")[0] == "newer"
    assert check("1.33.3-aliyun.1")[0] == "refused" and "out of support" in check("1.34.3-aliyun.1")[1]
    assert check("1.29.1-aliyun.1")[0] == "refused" and check("1.35.2")[0] == "refused"
    assert ack_support.gpu_image_type("1.35.7-aliyun.1") == "AliyunLinux3ContainerOptimized"
    with pytest.raises(ValueError, match="pools"):
        ack.AckClusterArgs(
            stack="s",
            settings=SETTINGS,
            pools=(),
            vswitch_id="v",
            vpc_id="vpc",
            key_pair_name="k",
            pod_cidr="10.244.0.0/16",
            system_disk_gib=60,
            public_bandwidth_mbps=10,
            ttl_hours=Decimal(4),
        )


def test_the_known_versions_are_what_the_recorded_api_offers():
    import json
    from pathlib import Path

    recorded = json.loads((Path(__file__).resolve().parents[2] / "tools/fixtures/ack-kubernetes-versions.json").read_text())
    assert {m["version"] for m in recorded["metadatas"]} == set(ack_support.KUBERNETES_VERSIONS)


def test_make_plan_stack_ack_shows_the_cluster_pool_test_and_fees(capsys):
    from tools import plan

    assert plan.main(["--stack", "ack"]) == 0
    out = capsys.readouterr().out
    for line in (
        "+ alicloud:cs/managedKubernetes:ManagedKubernetes  gpu-k8s-control-plane",
        "+ alicloud:cs/nodePool:NodePool  gpu-k8s-gpu-pool",
        "+ kubernetes:core/v1:Pod  gpu-k8s-smoke-pod-gpu-0",
        "after auto-release:       at least 1.02 per hour until `make down`",
        "cluster management fee (ACK Pro): 0.64 CNY/h",
        "API server load balancer (CLB): 0.147 CNY/h",
    ):
        assert line in out, line
    (timings,) = [line for line in out.splitlines() if line.startswith("    timings:")]
    assert "placeholder" not in timings  # a sentence on ACK, not node measurements
    assert "<image-id" not in out  # no image lookup on ACK


def test_make_plan_out_stack_ack_writes_the_manifests(tmp_path, capsys):
    from tools import plan

    out = tmp_path / "ack"
    assert plan.main(["--stack", "ack", "--out", str(out)]) == 0
    capsys.readouterr()
    written = sorted(p.name for p in (out / "manifests").iterdir())
    assert any(re.match(r"\d+-pod-gpu-k8s-smoke-pod-gpu-0", name) for name in written), written
    assert not any("device-plugin" in name or "flannel" in name for name in written)  # ACK's own
    assert (out / "plan.json").is_file()


@pytest.mark.parametrize(("stack", "refreshes"), [("ack", True), ("dev", False)])
def test_make_extend_refreshes_on_ack_only(tmp_path, stack, refreshes):
    """On ACK a pool its task set to 0 must be read at 0 to come back: extend runs `up --refresh` there."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    subprocess.run(["make", "-s", "-C", str(root), "extend", f"STACK={stack}"], env=env, check=True, capture_output=True)
    # then the bake-builder check reads the state (tools/baked_images.py: empty here, so no second up)
    (up,) = [line for line in calls.read_text().splitlines() if line.startswith("up ")]
    assert f"stack export -s {stack}" in calls.read_text()
    assert up.startswith(f"up -s {stack} --yes") and "--replace=urn:pulumi:" in up
    assert ("--refresh" in up.split()) is refreshes


def test_plan_diff_after_the_ttl_is_one_line_not_a_traceback(tmp_path, capsys):
    from tools import plan

    assert plan.main(["--stack", "ack", "--json", "--assume", "now=2026-09-21T14:13:20Z"]) == 0
    before = tmp_path / "before.json"
    before.write_text(capsys.readouterr().out)
    code = plan.main(["--stack", "ack", "--diff", str(before), "--assume", "now=2026-09-21T19:00:00Z"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and "node pool gpu ended at 2026-09-21T18:14:00Z" in err and "make extend" in err


def test_missing_deployer_tools_are_named():
    everything = {"kubectl": "/usr/bin/kubectl", "timeout": "/usr/bin/timeout", "python3": "/usr/bin/python3"}
    assert ack_support.missing_deployer_tools(everything.get, lambda: 5) == []
    no_kubectl = {**everything, "kubectl": None}
    assert ack_support.missing_deployer_tools(no_kubectl.get, lambda: 5) == ["kubectl"]
    assert ack_support.missing_deployer_tools(everything.get, lambda: 3) == ["bash 4 or newer (found 3)"]


def test_ack_without_kubectl_is_refused_before_anything_is_created(monkeypatch):
    from components.config import ConfigError

    monkeypatch.setattr(ack_support, "CHECK_DEPLOYER_TOOLS", True)
    monkeypatch.setattr(ack_support, "missing_deployer_tools", lambda: ["kubectl"])
    with pytest.raises(ConfigError, match=r"^gpu-k8s:cluster: 'ack'[\s\S]*missing: kubectl"):
        run_stack("ack")
    run_stack("p4")  # kubeadm needs nothing of the kind here


def test_ack_cluster_is_deleted_before_a_replacement(ack_run):
    (cluster,) = ack_run.of_type(CLUSTER)
    assert cluster.options["deleteBeforeReplace"] is True
    assert reveal(cluster.inputs["name"]).startswith("gpu-k8s-ack-")
