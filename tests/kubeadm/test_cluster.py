"""Bootstrap and cluster under mocks: the command DAG, triggers, secrets, joins, scale-out."""

import hashlib
import json

import pytest
from helpers import env_of, shipped

from components import steps
from components.facts import catalog
from components.kubeadm import cluster
from tools.harness import ProgramRun, is_secret, redact, reveal, run_program
from tools.mocks import PlaceholderMocks

REMOTE = "command:remote:Command"


def deps(run: ProgramRun, name: str) -> set[str]:
    by_urn = run.by_urn()
    return {by_urn[d].name for d in run.named(name).dependencies if d in by_urn}


def canon(value) -> str:
    """Comparable text of inputs: secrets revealed (so a changed secret counts), assets by path."""
    return json.dumps(redact(reveal(value)), sort_keys=True, default=str)


def commands(run: ProgramRun) -> dict[str, dict]:
    return {r.name: r.inputs for r in run.of_type(REMOTE)}


def env(run: ProgramRun, name: str) -> dict[str, str]:
    return env_of(run.named(name))


# --- one node (issue 3) ----------------------------------------------------------------


def test_node_steps_form_the_documented_dag(program):
    run = shipped("p4")
    n = "gpu-0-bootstrap"
    assert deps(run, f"{n}-driver-prepare") >= {f"{n}-wait-boot"}
    assert deps(run, f"{n}-settle") >= {f"{n}-driver-prepare"}
    for step in ("nvidia-driver", "container-runtime", "kube-packages"):
        assert deps(run, f"{n}-{step}") >= {f"{n}-driver-prepare", f"{n}-settle"}, step
    assert f"{n}-nvidia-driver" in deps(run, f"{n}-gpu-verify")
    # Driver, runtime and Kubernetes packages are independent: not serialised behind each other.
    for a, b in [
        ("nvidia-driver", "container-runtime"),
        ("nvidia-driver", "kube-packages"),
        ("container-runtime", "kube-packages"),
    ]:
        assert f"{n}-{a}" not in deps(run, f"{n}-{b}") and f"{n}-{b}" not in deps(run, f"{n}-{a}")
    assert deps(run, "gpu-k8s-kubeadm-init") >= {f"{n}-container-runtime", f"{n}-kube-packages"}
    assert deps(run, "gpu-k8s-kubeconfig") >= {"gpu-k8s-kubeadm-init"}


def test_every_step_copies_its_script_and_runs_it_with_quoted_inputs(program):
    run = shipped("dev")
    for name, inputs in commands(run).items():
        create = reveal(inputs["create"])
        script = create.rsplit("/", 1)[-1]
        copy = run.named(f"{name}-copy")
        assert copy.inputs["remotePath"] == f"/opt/gpu-k8s/{script}"
        assert f"{name}-copy" in deps(run, name)
        assert reveal(inputs["triggers"])[0] == steps.script_hash(script)
        # The node gets the rendered script (lib/common.sh inlined), and the hash is of that text.
        assert copy.inputs["source"].text == steps.render_script(script)
        # ... and the copy is replaced (copies again) with a new script or a new instance behind its host.
        host = run.named("gpu-0-instance").id
        assert reveal(copy.inputs["triggers"]) == [hashlib.sha256(copy.inputs["source"].text.encode()).hexdigest(), host]
        assert reveal(inputs["triggers"])[1] == host
    assert env(run, "gpu-0-bootstrap-gpu-verify")["EXPECTED_GPU_NAME"] == "NVIDIA A10-2Q"


def test_tesla_path_on_compute_and_grid_path_on_vgpu(program):
    tesla = env(shipped("p4"), "gpu-0-bootstrap-nvidia-driver")
    assert (tesla["GPU_DRIVER"], tesla["DRIVER_VERSION"], tesla["GRID_PLUGIN"]) == ("tesla", "535.129.03", "")
    grid = env(shipped("dev"), "gpu-0-bootstrap-nvidia-driver")
    assert (grid["GPU_DRIVER"], grid["DRIVER_VERSION"], grid["GRID_PLUGIN"]) == ("grid", "", "grid_driver_install")
    assert env(program("dev", instanceType="ecs.sgn8ia-m2.xlarge"), "gpu-0-bootstrap-nvidia-driver")["GRID_PLUGIN"] == (
        "gpu_grid_driver_install"
    )


def test_cuda_toolkit_and_docker_only_when_asked(program):
    plain = shipped("p4")
    assert env(plain, "gpu-0-bootstrap-nvidia-driver")["INSTALL_CUDA_TOOLKIT"] == "false"
    assert "gpu-0-bootstrap-docker-gpu-check" not in commands(plain)
    asked = program("p4", installCudaToolkit="true", installDocker="true")
    assert env(asked, "gpu-0-bootstrap-nvidia-driver")["INSTALL_CUDA_TOOLKIT"] == "true"
    assert deps(asked, "gpu-0-bootstrap-docker-gpu-check") >= {
        "gpu-0-bootstrap-nvidia-driver",
        "gpu-0-bootstrap-container-runtime",
    }
    # GPU isolation (the default) hides `docker run --gpus` devices from unprivileged containers: warned.
    assert any("gpuIsolation with installDocker" in w and "--cap-add SYS_ADMIN" in w for w in asked.warnings)
    assert not any("gpuIsolation with installDocker" in w for w in plain.warnings)


def test_china_region_uses_aliyun_mirrors_and_mirrors_reach_containerd(program):
    run = program("dev", registryMirrors={"docker.io": "https://abc.mirror.aliyuncs.com"})
    assert env(run, "gpu-0-bootstrap-kube-packages")["PACKAGE_MIRROR"] == "aliyun"
    assert env(run, "gpu-k8s-kubeadm-init")["IMAGE_REPOSITORY"] == "registry.aliyuncs.com/google_containers"
    assert env(run, "gpu-0-bootstrap-container-runtime")["REGISTRY_MIRRORS"] == "docker.io=https://abc.mirror.aliyuncs.com"
    abroad = program("dev", **{"alicloud:region": "ap-southeast-1"})
    assert env(abroad, "gpu-k8s-kubeadm-init")["IMAGE_REPOSITORY"] == "registry.k8s.io"


def test_single_node_control_plane_is_untainted_with_public_ip_in_sans(program):
    run = shipped("dev")
    init = env(run, "gpu-k8s-kubeadm-init")
    assert init["CONTROL_PLANE_TAINT"] == "false"
    assert init["API_SERVER_IP"] == run.outputs["controlPlaneIp"]
    assert init["KUBERNETES_VERSION"] == "1.34.2" and init["POD_CIDR"] == "10.244.0.0/16"


def test_triggers_and_commands_are_stable_across_runs():
    # Same config, different wall clock: every command, copy and trigger is identical,
    # so a second `pulumi up` changes nothing.
    a = run_program("mixed", mocks=PlaceholderMocks(clock=lambda: 1_800_000_000))
    b = run_program("mixed", mocks=PlaceholderMocks(clock=lambda: 1_800_090_000))
    kinds = (REMOTE, "command:remote:CopyToRemote", "kubernetes:core/v1:NodePatch", "kubernetes:core/v1:Pod")
    for kind in kinds:
        first = {r.urn: canon(r.inputs) for r in a.of_type(kind)}
        second = {r.urn: canon(r.inputs) for r in b.of_type(kind)}
        assert first == second, kind


def test_secrets_are_secret_everywhere(program):
    run = shipped("mixed")
    assert is_secret(run.outputs["kubeconfig"]) and is_secret(run.outputs["sshPrivateKey"])
    for name in ("gpu-k8s-kubeconfig", "gpu-k8s-ca-hash"):
        r = run.named(name)
        assert r.inputs["logging"] == "none" and "stdout" in r.additional_secret_outputs
    for r in run.of_type(REMOTE):
        assert is_secret(r.inputs["connection"]), r.name  # carries the private key
        if "stdin" in r.inputs:
            assert is_secret(r.inputs["stdin"]), r.name
    token = reveal(run.named("train-1-kubeadm-join").inputs["stdin"]).splitlines()
    assert token[0] == "xxxxxx.xxxxxxxxxxxxxxxx" and token[1].startswith("sha256:")
    for r in run.of_type("random:index/randomString:RandomString"):
        assert "result" in r.additional_secret_outputs
    # The token never reaches a command line.
    assert all("xxxxxx.x" not in json.dumps(reveal(r.inputs.get("create"))) for r in run.of_type(REMOTE))


def test_kubernetes_provider_is_built_from_the_fetched_kubeconfig(program):
    run = shipped("dev")
    (provider,) = run.of_type("pulumi:providers:kubernetes")
    assert is_secret(provider.inputs["kubeconfig"])
    assert "server: https://" + run.outputs["controlPlaneIp"] + ":6443" in reveal(provider.inputs["kubeconfig"])
    assert provider.inputs["deleteUnreachable"] == "true"
    assert run.named("gpu-k8s-kubeconfig").urn in provider.dependencies
    for r in run.resources:
        if r.type.startswith("kubernetes:"):
            assert r.provider.startswith(provider.urn), r.name


def test_destroy_needs_no_remote_command():
    run = shipped("mixed")
    assert all("delete" not in r.inputs for r in run.of_type(REMOTE))


# --- many nodes (issue 6) --------------------------------------------------------------


def test_mixed_pools_get_their_own_driver_and_labels(program):
    run = shipped("mixed")
    for node, driver in [("train-0", "tesla"), ("train-1", "tesla")] + [(f"infer-{i}", "grid") for i in range(4)]:
        assert env(run, f"{node}-bootstrap-nvidia-driver")["GPU_DRIVER"] == driver
        labels = reveal(run.named(f"{node}-labels").inputs["metadata"])["labels"]
        assert labels["gpu-k8s/driver"] == driver
        assert labels["gpu-k8s/pool"] == node.split("-")[0]
        assert labels["gpu-k8s/gpu-kind"] == ("compute" if driver == "tesla" else "vgpu")
    # GPU Feature Discovery (device plugin v0.19+) owns nvidia.com/gpu.product; without it the patch sets it.
    assert "nvidia.com/gpu.product" not in reveal(run.named("infer-0-labels").inputs["metadata"])["labels"]
    assert (
        cluster.node_labels("infer", catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge"), "NVIDIA A10-2Q")["nvidia.com/gpu.product"]
        == "NVIDIA-A10-2Q"
    )
    t4 = catalog.profile_for("ecs.gn6i-c4g1.xlarge")
    assert "nvidia.com/gpu.product" not in cluster.node_labels("train", t4, "Tesla T4", feature_discovery=True)


def test_workers_join_in_parallel_after_the_control_plane(program):
    run = shipped("mixed")
    workers = ["train-1"] + [f"infer-{i}" for i in range(4)]
    joins = [f"{w}-kubeadm-join" for w in workers]
    assert "train-0-kubeadm-join" not in commands(run)  # the first GPU node is the control plane
    for w, join in zip(workers, joins, strict=True):
        d = deps(run, join)
        assert {f"{w}-join-token", "gpu-k8s-ca-hash", f"{w}-bootstrap-container-runtime"} <= d
        assert not d & set(joins)  # never behind another worker
        assert env(run, join)["CONTROL_PLANE_ENDPOINT"].endswith(":6443")
        assert env(run, join)["NODE_NAME"] == w


def test_dedicated_control_plane_runs_no_gpu_steps_and_stays_tainted(program):
    run = program("mixed", controlPlaneInstanceType="ecs.g7.large")
    names = commands(run)
    assert "control-plane-bootstrap-wait-boot" in names
    assert not [n for n in names if n.startswith("control-plane-bootstrap-") and ("driver" in n or "gpu" in n)]
    assert env(run, "gpu-k8s-kubeadm-init")["CONTROL_PLANE_TAINT"] == "true"
    assert {f"train-{i}-kubeadm-join" for i in range(2)} <= set(names)
    labels = reveal(run.named("control-plane-labels").inputs["metadata"])["labels"]
    assert labels == {"gpu-k8s/pool": "control-plane"}  # no gpu-kind: the device plugin skips it
    (cp,) = [r for r in run.of_type("alicloud:ecs/instance:Instance") if r.name == "control-plane-instance"]
    assert cp.inputs["instanceType"] == "ecs.g7.large"


def test_zone_must_sell_every_instance_type_including_the_control_plane():
    mocks = PlaceholderMocks()
    run_program("mixed", {"gpu-k8s:controlPlaneInstanceType": "ecs.g7.large"}, mocks=mocks)
    asked = [c.args["availableInstanceType"] for c in mocks.invokes if c.token == "alicloud:index/getZones:getZones"]
    assert asked == ["ecs.gn6i-c4g1.xlarge", "ecs.sgn7i-vws-m2s.xlarge", "ecs.g7.large"]


def _pool_override(train: int, infer: int) -> dict:
    return {
        "gpu-k8s:nodePools": [
            {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": train},
            {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": infer},
        ]
    }


@pytest.mark.parametrize("before,after", [((2, 4), (3, 4)), ((2, 4), (2, 2)), ((2, 4), (1, 5))])
def test_count_change_touches_only_the_changed_nodes(before, after):
    # The same stored TTL anchor in both runs (as in real state), so only node counts differ.
    a = run_program("mixed", _pool_override(*before), mocks=PlaceholderMocks(clock=lambda: 1_800_000_000))
    b = run_program("mixed", _pool_override(*after), mocks=PlaceholderMocks(clock=lambda: 1_800_000_000))
    ra, rb = a.by_urn(), b.by_urn()
    old_nodes = {f"train-{i}" for i in range(before[0])} | {f"infer-{i}" for i in range(before[1])}
    new_nodes = {f"train-{i}" for i in range(after[0])} | {f"infer-{i}" for i in range(after[1])}
    kept = old_nodes & new_nodes
    # Cluster-wide steps that must react to the node set (pruning, GPU checks).
    cluster_wide = ("gpu-k8s-prune-nodes", "gpu-k8s-smoke-gpu-allocatable", "gpu-k8s-smoke-gpu-test-result")
    for urn in ra.keys() & rb.keys():
        name = ra[urn].name
        if name.startswith(cluster_wide) or name.startswith("gpu-k8s-smoke-pod-") or ra[urn].type.startswith("gpu-k8s:"):
            continue
        if ra[urn].type == "pulumi:providers:kubernetes":
            continue
        assert canon(ra[urn].inputs) == canon(rb[urn].inputs), name
    # Per-node resources (instance, anchor, bootstrap, token, join, labels) are named <node>-<role>.
    node_of = lambda r: r.name.split("-", 2)[0] + "-" + r.name.split("-", 2)[1]  # noqa: E731
    only_a = {node_of(ra[u]) for u in ra.keys() - rb.keys() if ra[u].name.startswith(("train-", "infer-"))}
    only_b = {node_of(rb[u]) for u in rb.keys() - ra.keys() if rb[u].name.startswith(("train-", "infer-"))}
    assert only_a == old_nodes - new_nodes
    assert only_b == new_nodes - old_nodes
    assert kept  # the comparison above covered real nodes
    prune = env(b, "gpu-k8s-prune-nodes")["DESIRED_NODES"].split()
    assert set(prune) == new_nodes


def test_gpu_test_runs_on_every_gpu_node(program):
    run = shipped("mixed")
    pods = {reveal(p.inputs["spec"])["nodeSelector"]["kubernetes.io/hostname"] for p in run.of_type("kubernetes:core/v1:Pod")}
    assert pods == {"train-0", "train-1", "infer-0", "infer-1", "infer-2", "infer-3"}
    table = run.outputs["gpuNodes"]
    assert [row["node"] for row in table] == ["train-0", "train-1", "infer-0", "infer-1", "infer-2", "infer-3"]
    assert {row["driver"].split()[0] for row in table} == {"tesla", "grid"}
    assert set(table[0]) == {"node", "pool", "gpu", "driver", "allocatableGpus", "test", "featureLabels"}


def test_gpu_node_table_says_skipped_when_no_test_runs(program):
    rows = program("mixed", smokeTest="none").outputs["gpuNodes"]
    assert len(rows) == 6 and {row["test"] for row in rows} == {"SKIPPED"}
    assert {row["allocatableGpus"] for row in rows} == {1}  # the allocatable check still runs


def test_each_workers_token_script_has_its_own_file_on_the_control_plane():
    """Every worker's token step runs 43 on the control plane: one shared file could be rewritten by
    one step's copy while another step's bash reads it. The node steps keep their script's name."""
    run = shipped("mixed")
    paths = {r.name: r.inputs["remotePath"] for r in run.of_type("command:remote:CopyToRemote")}
    tokens = {n: p for n, p in paths.items() if n.endswith("-join-token-copy")}
    assert len(tokens) == 5 and len(set(tokens.values())) == 5
    assert tokens["infer-0-join-token-copy"] == "/opt/gpu-k8s/infer-0-join-token.sh"
    assert reveal(run.named("infer-0-join-token").inputs["create"]).endswith("bash /opt/gpu-k8s/infer-0-join-token.sh")
    assert paths["train-0-bootstrap-wait-boot-copy"] == "/opt/gpu-k8s/00-wait-boot.sh"
