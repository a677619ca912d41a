"""GPU smoke test: allocatable check -> pinned test pods (1 GPU each) -> result verdict."""

from __future__ import annotations

import functools
import json
import re

import pulumi
import pytest
from helpers import env_of, kinds, run_stack, shipped

from components import steps
from components.backend import ClusterChecks
from components.facts import catalog, cuda
from components.gpu import device_plugin
from components.gpu.smoke_test import (
    GpuNode,
    GpuSmokeTest,
    GpuSmokeTestArgs,
    GpuTestFailed,
    _pod_spec,
    _test_pods,
    _verdict,
    spec_hash,
)
from tests.gpu_failures import cases, cluster, command_failure, run_result_check
from tests.gpu_failures import pod as pod_state
from tests.stubs import StubBin
from tools.mocks import PlaceholderMocks

# kubectl over SSH on a kubeadm control plane, as components/kubeadm/backend.py sets it up.
SSH_CHECKS = ClusterChecks(
    run=lambda name, **kw: steps.run_script(name, on=steps.host("203.0.113.9", "PLACEHOLDER", "i-placeholder"), **kw),
    plugin_namespace=device_plugin.NAMESPACE,
    plugin_selector="name=nvidia-device-plugin-ds",
    node_setup="gpu-k8s",
)
P4 = catalog.profile_for("ecs.gn5i-c2g1.large")
A10_2Q = catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge")
SEED_CUDA_ERROR = next(c["text"] for c in cases("test_pod") if "newer than the driver" in c["case"])
SEED_INSUFFICIENT = next(c["text"] for c in cases("test_pod") if "Insufficient" in c["case"])
FAILED_STDOUT = json.dumps(
    {
        "passed": False,
        "pods": [
            {
                "pod": "default/{pod}",
                "node": "gpu-0",
                "phase": "Pending",
                "passed": False,
                "log": "",
                "diagnosis": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu",
            }
        ],
    }
)


@functools.cache
def dev_pod() -> str:
    """The dev stack's test pod name: gpu-test-gpu-0-<spec hash>."""
    (pod,) = kinds(shipped("dev"), "Pod")
    return pod.inputs["metadata"]["name"]


def _pods(run):
    return sorted(kinds(run, "Pod"), key=lambda r: r.inputs["metadata"]["name"])


def _gpu_limit(pod) -> dict:
    (container,) = pod.inputs["spec"]["containers"]
    return container["resources"]["limits"]


@pytest.fixture(scope="module")
def mixed():
    return shipped("mixed")


def test_one_pod_per_gpu_node_each_asking_exactly_one_gpu(mixed):
    pods = _pods(mixed)
    nodes = [f"train-{i}" for i in range(2)] + [f"infer-{i}" for i in range(4)]
    assert sorted(p.inputs["spec"]["nodeSelector"]["kubernetes.io/hostname"] for p in pods) == sorted(nodes)
    for pod in pods:
        node = pod.inputs["spec"]["nodeSelector"]["kubernetes.io/hostname"]
        assert re.fullmatch(rf"gpu-test-{node}-[0-9a-f]{{6}}", pod.inputs["metadata"]["name"])
        assert _gpu_limit(pod) == {"nvidia.com/gpu": "1"}
        spec = pod.inputs["spec"]
        assert spec["restartPolicy"] == "Never"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert pod.inputs["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}


def test_mixed_pools_get_the_vectoradd_tag_that_fits_all_drivers(mixed):
    images = {p.inputs["spec"]["containers"][0]["image"] for p in _pods(mixed)}
    assert images == {"nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.2.1"}  # GRID 470 + Tesla 535


def test_dependency_order(mixed):
    plugin = mixed.named("gpu-k8s-device-plugin-daemonset")
    allocatable = mixed.named("gpu-k8s-smoke-gpu-allocatable")
    result = mixed.named("gpu-k8s-smoke-gpu-test-result")
    assert plugin.urn in allocatable.dependencies
    pods = _pods(mixed)
    for pod in pods:
        assert allocatable.urn in pod.dependencies
    assert {p.urn for p in pods} <= set(result.dependencies)


def test_remote_checks_get_their_environment(mixed):
    allocatable = env_of(mixed.named("gpu-k8s-smoke-gpu-allocatable"))
    assert allocatable["GPU_NODES"].split() == ["train-0", "train-1", "infer-0", "infer-1", "infer-2", "infer-3"]
    assert allocatable["TIMEOUT_SECONDS"] == "300"
    assert (allocatable["PLUGIN_NAMESPACE"], allocatable["PLUGIN_SELECTOR"]) == ("kube-system", "name=nvidia-device-plugin-ds")
    result = env_of(mixed.named("gpu-k8s-smoke-gpu-test-result"))
    assert sorted(result["TEST_PODS"].split()) == sorted(f"default/{p.inputs['metadata']['name']}" for p in _pods(mixed))
    assert (result["SUCCESS_PATTERN"], result["TIMEOUT_SECONDS"]) == ("Test PASSED", "900")


def test_passed_verdict_is_an_output(mixed):
    result = mixed.outputs["gpuTest"]
    assert result["verdict"] == "PASSED" and result["successPattern"] == "Test PASSED"
    assert {p["node"] for p in result["pods"]} == {f"train-{i}" for i in range(2)} | {f"infer-{i}" for i in range(4)}
    assert all(p["passed"] and p["log"] in mixed.placeholders for p in result["pods"])
    assert {row["node"]: row["allocatableGpus"] for row in mixed.outputs["gpuNodes"]} == {p["node"]: 1 for p in result["pods"]}
    assert not [w for w in mixed.warnings if "FAILED" in w]


class RealResultCheck:
    """The result-check command runs the real 80-gpu-test-result.sh, with the environment the
    program gave it, against a stub cluster; a non-zero exit fails the command as
    pulumi-command does (so the engine records nothing and the next up runs it again)."""

    def __init__(self, sb: StubBin):
        self.sb = cluster(sb)
        self.exit_codes: list[int] = []

    def __call__(self, inputs: dict, env: dict[str, str]) -> str:
        result = run_result_check(self.sb, {**env, "TIMEOUT_SECONDS": "0"})
        self.exit_codes.append(result.returncode)
        if result.returncode:
            raise RuntimeError(command_failure(inputs["create"], result))
        return result.stdout


def _with_result_check(check: RealResultCheck) -> PlaceholderMocks:
    mocks = PlaceholderMocks()
    mocks.command_stdout["-gpu-test-result"] = check
    return mocks


def test_passed_verdict_through_the_real_result_check(tmp_path):
    check = RealResultCheck(StubBin(tmp_path))
    pod_state(check.sb, dev_pod(), phase="Succeeded", node="gpu-0", log="[Vector addition of 50000 elements]\nTest PASSED\n")
    run = run_stack("dev", mocks=_with_result_check(check))
    assert check.exit_codes == [0]
    result = run.outputs["gpuTest"]
    assert result["verdict"] == "PASSED" and result["pods"][0]["log"].endswith("Test PASSED")


@pytest.mark.parametrize(
    ("files", "code", "line"),
    [
        (
            {"phase": "Failed", "node": "gpu-0", "messages": "StartError " + SEED_CUDA_ERROR},
            2,
            "ERROR: default/gpu-test-gpu-0 on gpu-0: Failed: the image needs a newer driver (unsatisfied condition: cuda>=12.3)",
        ),
        (
            {"phase": "Pending", "events": "FailedScheduling: " + SEED_INSUFFICIENT},
            3,
            "ERROR: default/gpu-test-gpu-0 on no node: Pending: still Pending after 0s: FailedScheduling: 0/1 nodes",
        ),
    ],
    ids=["failed", "timeout"],
)
def test_failed_gpu_test_fails_pulumi_up_with_the_diagnosis(tmp_path, files, code, line):
    """Issue 9 defect 4: the command fails (not recorded, re-run next up) and its error names the cause."""
    check = RealResultCheck(StubBin(tmp_path))
    pod_state(check.sb, dev_pod(), **files)
    with pytest.raises(RuntimeError) as failure:
        run_stack("dev", mocks=_with_result_check(check))
    assert check.exit_codes == [code]
    message = str(failure.value)
    assert message.startswith(f"Process exited with status {code}: running ")
    assert "bash /opt/gpu-k8s/80-gpu-test-result.sh" in message
    assert line.replace("gpu-test-gpu-0", dev_pod()) in message
    assert f"GPU test {'FAILED' if code == 2 else 'TIMEOUT'}: 1 of 1 test pods" in message
    assert '"passed": false' in message  # the JSON is in the error too


def test_a_completed_check_without_a_passed_verdict_still_fails_the_run():
    """No log.error-only path: output that is not PASSED raises (log.error alone exits 0, pulumi/pulumi#5085)."""
    mocks = PlaceholderMocks()
    mocks.command_stdout["-gpu-test-result"] = lambda inputs, env: FAILED_STDOUT.replace("{pod}", dev_pod())
    with pytest.raises(GpuTestFailed) as failure:
        run_stack("dev", mocks=mocks)
    assert "GPU smoke test FAILED" in str(failure.value)
    assert f"{dev_pod()} on gpu-0: Pending: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu" in str(failure.value)
    assert isinstance(failure.value, pulumi.RunError)  # a clean exit, not a traceback


def test_time_slicing_runs_n_pods_per_node_each_asking_one_gpu():
    run = run_stack("mixed", timeSlicingReplicas=3)
    pods = _pods(run)
    assert len(pods) == 6 * 3
    per_node: dict[str, list[str]] = {}
    for pod in pods:
        assert _gpu_limit(pod) == {"nvidia.com/gpu": "1"}
        per_node.setdefault(pod.inputs["spec"]["nodeSelector"]["kubernetes.io/hostname"], []).append(
            pod.inputs["metadata"]["name"]
        )
    assert [re.sub(r"-[0-9a-f]{6}$", "", n) for n in per_node["infer-2"]] == [f"gpu-test-infer-2-{i}" for i in range(3)]
    assert all(re.fullmatch(r"gpu-test-[a-z0-9-]+-[0-9a-f]{6}", n) and len(n) <= 63 for ns in per_node.values() for n in ns)
    assert all(len(names) == 3 for names in per_node.values())
    assert {row["allocatableGpus"] for row in run.outputs["gpuNodes"]} == {3}
    assert run.outputs["gpuTest"]["verdict"] == "PASSED"


def test_tensorflow_runs_the_seed_script_from_a_config_map():
    run = run_stack("dev", smokeTest="tensorflow")
    (cm,) = [r for r in kinds(run, "ConfigMap") if r.inputs["metadata"]["name"] == "gpu-test-script"]
    assert cm.inputs["data"]["test.py"] == "import tensorflow as tf\nprint(tf.test.gpu_device_name())\n"
    (pod,) = _pods(run)
    (container,) = pod.inputs["spec"]["containers"]
    assert container["image"] == "tensorflow/tensorflow:2.6.0-gpu"
    assert container["command"] == ["python3", "/app/test.py"]
    assert pod.inputs["spec"]["volumes"] == [{"name": "gpu-test-script", "configMap": {"name": "gpu-test-script"}}]
    assert cm.urn in pod.dependencies
    assert env_of(run.named("gpu-k8s-smoke-gpu-test-result"))["SUCCESS_PATTERN"] == "/device:GPU:0"


def test_image_override_replaces_the_default():
    image = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"
    run = run_stack("p4", smokeTestImage=image)  # Tesla 535: CUDA 12 minor-version compat
    assert {p.inputs["spec"]["containers"][0]["image"] for p in _pods(run)} == {image}
    assert run.outputs["gpuTest"]["cudaVersion"] == "12.5"


def test_none_runs_only_the_allocatable_check():
    run = run_stack("dev", smokeTest="none")
    assert not _pods(run)
    names = {r.name for r in run.resources}
    assert "gpu-k8s-smoke-gpu-allocatable" in names and "gpu-k8s-smoke-gpu-test-result" not in names
    assert run.outputs["gpuTest"]["verdict"] == "SKIPPED"


@pulumi.runtime.test
def test_component_attributes(pulumi_mocks_set):
    smoke = GpuSmokeTest(
        "t",
        GpuSmokeTestArgs(
            checks=SSH_CHECKS,
            gpu_nodes=[("gpu-0", P4, "535.129.03"), ("gpu-1", P4, "535.129.03")],
            time_slicing_replicas=2,
        ),
    )
    assert smoke.image == "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0"
    assert len(smoke.pods) == 4 and smoke.result_check is not None and smoke.config_map is None

    def check(values):
        allocatable, result = values
        assert allocatable == {"gpu-0": 2, "gpu-1": 2}
        assert result["verdict"] == "PASSED" and len(result["pods"]) == 4

    return pulumi.Output.all(smoke.allocatable, smoke.result).apply(check)


def test_test_pod_names_are_deterministic_and_carry_the_spec_hash():
    nodes = [GpuNode("gpu-0", P4, "535.129.03"), GpuNode("gpu-1", P4, "535.129.03")]
    specs = {n.name: _pod_spec("vectoradd", "img:1", n.name) for n in nodes}
    verified = {"gpu-0": "a1", "gpu-1": "b2"}
    h0, h1 = (spec_hash({"spec": specs[n], "run": "", "verifies": verified[n]}) for n in ("gpu-0", "gpu-1"))
    assert _test_pods(nodes, 1, specs, "", verified) == [(f"gpu-test-gpu-0-{h0}", "gpu-0"), (f"gpu-test-gpu-1-{h1}", "gpu-1")]
    assert _test_pods(nodes[:1], 2, specs, "", verified) == [
        (f"gpu-test-gpu-0-0-{h0}", "gpu-0"),
        (f"gpu-test-gpu-0-1-{h0}", "gpu-0"),
    ]
    assert _test_pods(nodes, 1, specs, "", verified) == _test_pods(nodes, 1, specs, "", dict(verified))  # deterministic
    # another image is another name (the old pod, maybe still terminating, never blocks it)
    other = {"gpu-0": _pod_spec("vectoradd", "img:2", "gpu-0")}
    assert _test_pods(nodes[:1], 1, other) != _test_pods(nodes[:1], 1, specs)
    # so is another run (make retest) and anything else the test verifies (a new instance, driver, plugin)
    assert _test_pods(nodes[:1], 1, specs, "20261204T120000Z") != _test_pods(nodes[:1], 1, specs)
    assert _test_pods(nodes[:1], 1, specs, "", {"gpu-0": "c3"}) != _test_pods(nodes[:1], 1, specs, "", verified)
    # a DNS label even for the longest node name
    long = GpuNode("n" * 63, P4, "535.129.03")
    for name, _ in _test_pods([long], 3, {}):
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)


def test_verdict_needs_every_pod_to_pass():
    pods = [("gpu-test-a", "a"), ("gpu-test-b", "b")]
    common = {"test": "vectoradd", "image": "i", "cuda_version": "11.2", "pattern": "Test PASSED"}
    one = {"pod": "default/gpu-test-a", "phase": "Succeeded", "passed": True, "log": "Test PASSED"}
    only_a = _verdict(json.dumps({"passed": True, "pods": [one]}), pods, **common)
    assert only_a["verdict"] == "FAILED" and only_a["pods"][1]["diagnosis"] == "the result check did not report this pod"
    both = _verdict(json.dumps({"passed": True, "pods": [one, {**one, "pod": "default/gpu-test-b"}]}), pods, **common)
    assert both["verdict"] == "PASSED"
    garbled = _verdict("kubectl: connection refused", pods, **common)
    assert garbled["verdict"] == "FAILED" and "connection refused" in garbled["pods"][0]["diagnosis"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"test": "mnist"}, "test"),
        ({"gpu_nodes": []}, "at least one"),
        ({"gpu_nodes": [("gpu-0", P4, "535.129.03")] * 2}, "repeat"),
        ({"gpu_nodes": [("GPU_0", P4, "535.129.03")]}, "node name"),
        ({"gpu_nodes": [("gpu-0", P4, "535")]}, "driver version"),
        ({"time_slicing_replicas": 0}, "time_slicing_replicas"),
        ({"image": "bad image"}, "image reference"),
        ({"test": "tensorflow", "image": "tensorflow/tensorflow:latest-gpu"}, "needs CUDA 12.3"),
        ({"image": "example.com/gpu/app:1.0"}, "smokeTestCudaVersion"),
    ],
)
def test_args_are_validated(kwargs, error):
    base = {"checks": SSH_CHECKS, "gpu_nodes": [("gpu-0", A10_2Q, "470.256.03")]}
    with pytest.raises(ValueError, match=error):
        GpuSmokeTestArgs(**{**base, **kwargs})


def test_incompatible_image_is_a_cuda_error():
    with pytest.raises(cuda.CudaIncompatible):
        GpuSmokeTestArgs(
            checks=SSH_CHECKS,
            gpu_nodes=[("gpu-0", A10_2Q, "470.161.03")],
            image="tensorflow/tensorflow:latest-gpu",
        )


def test_grid_driver_version_drives_the_cuda_rule_and_gpu_verify():
    """dev is sgn7i-vws (GRID): Aliyun's 470 by default; a 535 GRID driver from gridDriverUrl allows CUDA 11.7."""
    default = shipped("dev")
    grid_run = "https://example.com/NVIDIA-Linux-x86_64-535.183.06-grid.run"
    newer = run_stack("dev", gridDriverVersion="535.183.06", gridDriverUrl=grid_run)
    assert default.outputs["gpuTest"]["image"].endswith("vectoradd-cuda11.2.1")
    assert newer.outputs["gpuTest"]["image"].endswith("vectoradd-cuda11.7.1-ubuntu20.04")
    (verify,) = [r for r in newer.resources if r.name.endswith("-gpu-verify")]
    assert env_of(verify)["DRIVER_VERSION"] == "535.183.06"


def test_tensorflow_pods_grow_gpu_memory_so_time_sliced_pods_fit():
    run = run_stack("dev", smokeTest="tensorflow", timeSlicingReplicas=2)
    pods = _pods(run)
    assert len(pods) == 2
    for pod in pods:
        (container,) = pod.inputs["spec"]["containers"]
        assert container["env"] == [{"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"}]
    (vectoradd,) = _pods(shipped("dev"))
    assert "env" not in vectoradd.inputs["spec"]["containers"][0]
