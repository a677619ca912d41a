"""Every real failure text in ../shared/fixtures/gpu-failures/messages.json reaches its cause
through the real scripts (70-gpu-allocatable.sh, 80-gpu-test-result.sh) and a stub kubectl
that reports the text where the fixture says it appears."""

from __future__ import annotations

import json
import time

import pytest

from tests.gpu_failures import KUBECTL, cases, cluster, pod
from tests.stubs import StubBin

# What each fixture case must make the scripts say (the fixture's "cause", in the scripts' words).
PLUGIN_CAUSES = {
    "device plugin v0.20.0, containerd default runtime is runc (no NVIDIA runtime in the plugin's container)": (
        "containerd's default runtime is not nvidia (NVIDIA Container Toolkit not configured): "
        "check default_runtime_name in /etc/containerd/config.toml"
    ),
    "device plugin v0.17-v0.19, runtime is runc": "containerd's default runtime is not nvidia",
    "NVIDIA runtime hook fails before the plugin starts: driver not loaded": (
        "the NVIDIA kernel driver is not loaded on the node"
    ),
}
# (exit status, verdict, cause) per test-pod case.
TEST_POD_CAUSES = {
    "seed: Pending, Insufficient nvidia.com/gpu": (
        3,
        "TIMEOUT",
        "no free nvidia.com/gpu on the node: the device plugin has not registered its GPUs, or all are in use",
    ),
    "seed: CUDA image newer than the driver": (2, "FAILED", "the image needs a newer driver (unsatisfied condition: cuda>=12.3)"),
    "registry unreachable": (
        3,
        "TIMEOUT",
        "the registry is unreachable or too slow from the node: set gpu-k8s:registryMirrors",
    ),
    "bad image tag": (2, "FAILED", "the image does not exist (Failed to pull image"),
    "vectorAdd on a driver too old for its runtime": (2, "FAILED", "the node's driver is too old for the image's CUDA"),
    "NVIDIA libraries not injected": (
        2,
        "FAILED",
        "the container did not get the NVIDIA runtime (libnvidia-ml.so.1: cannot open shared object file): "
        "containerd's default runtime is not nvidia",
    ),
    "NVML unknown error": (
        2,
        "FAILED",
        "the container lost access to the GPU devices (Failed to initialize NVML: Unknown Error)",
    ),
}
ALLOC = {
    "POLL_SECONDS": "0",
    "GPU_NODES": "gpu-0",
    "TIMEOUT_SECONDS": "0",
    "PLUGIN_NAMESPACE": "kube-system",
    "PLUGIN_SELECTOR": "name=nvidia-device-plugin-ds",
}
TEST = {"POLL_SECONDS": "0", "TEST_PODS": "default/gpu-test", "SUCCESS_PATTERN": "Test PASSED", "TIMEOUT_SECONDS": "0"}
PLUGIN_POD = "nvidia-device-plugin-daemonset-abcde"


@pytest.fixture
def sb(tmp_path) -> StubBin:
    return cluster(StubBin(tmp_path))


def test_every_fixture_case_has_an_expected_cause():
    assert {c["case"] for c in cases("device_plugin_logs")} == set(PLUGIN_CAUSES)
    assert {c["case"] for c in cases("test_pod")} == set(TEST_POD_CAUSES)


@pytest.mark.parametrize("case", cases("device_plugin_logs"), ids=lambda c: c["case"][:40])
def test_device_plugin_failure_reaches_its_cause(sb: StubBin, case: dict):
    (sb.state / "pods-gpu-0").write_text(f"{PLUGIN_POD}\\tCrashLoopBackOff \\n")
    if "terminated.message" in case["where"]:
        # The hook's error is in the container status; kubectl logs only says it is waiting.
        pod(sb, PLUGIN_POD, messages=f"\n{case['text']}\n", log=case["logs_text"])
    else:
        pod(sb, PLUGIN_POD, log=case["text"])
    result = sb.run("70-gpu-allocatable.sh", ALLOC)
    assert result.returncode == 1 and result.stdout == ""
    assert f"node gpu-0 has no allocatable nvidia.com/gpu (need 1) after 0s: {PLUGIN_CAUSES[case['case']]}" in result.stderr
    assert case["text"].strip().splitlines()[-1] in result.stderr  # the evidence is quoted
    if "terminated.message" in case["where"]:
        assert f"container termination message of kube-system/{PLUGIN_POD}:" in result.stderr
        assert sb.called("kubectl", "logs", "-n", "kube-system", PLUGIN_POD, "--tail=20", "--previous")


def _place(sb: StubBin, case: dict) -> None:
    """Put a test-pod case's text where the fixture says the kubelet reports it."""
    where, text = case["where"], case["text"]
    if where == "pod log":
        pod(sb, "gpu-test", phase="Failed", node="gpu-0", log=text + "\n")
    elif "FailedScheduling" in where:
        pod(sb, "gpu-test", phase="Pending", events=f"FailedScheduling: {text}\n")
    elif "StartError" in where:
        pod(sb, "gpu-test", phase="Failed", node="gpu-0", messages=f"StartError {text}\n", events=f"Failed: {text}\n")
    elif "ErrImagePull" in where:
        pod(sb, "gpu-test", phase="Pending", node="gpu-0", messages=f"ErrImagePull {text}\n", events=f"Failed: {text}\n")
    elif where == "pod events":
        image = text.split('"')[1]
        pod(
            sb,
            "gpu-test",
            phase="Pending",
            node="gpu-0",
            messages=f'ImagePullBackOff Back-off pulling image "{image}"\n',
            events=f"Failed: {text}\nBackOff: Back-off pulling image {image}\n",
        )
    else:
        raise AssertionError(f"no stub for {where!r}")


@pytest.mark.parametrize("case", cases("test_pod"), ids=lambda c: c["case"][:40])
def test_test_pod_failure_reaches_its_cause(sb: StubBin, case: dict):
    _place(sb, case)
    code, verdict, cause = TEST_POD_CAUSES[case["case"]]
    result = sb.run("80-gpu-test-result.sh", TEST)
    assert result.returncode == code, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == verdict and report["passed"] is False
    (entry,) = report["pods"]
    assert cause in entry["diagnosis"]
    assert entry["timedOut"] is (verdict == "TIMEOUT")
    # The diagnosis is the pod's ERROR line on stderr, which becomes `pulumi up`'s error.
    assert f"ERROR: default/gpu-test on {entry['node'] or 'no node'}: {entry['phase']}: {entry['diagnosis']}" in result.stderr


def test_a_missing_image_stops_the_wait_at_once(sb: StubBin):
    (case,) = [c for c in cases("test_pod") if c["case"] == "bad image tag"]
    _place(sb, case)
    started = time.monotonic()
    result = sb.run("80-gpu-test-result.sh", {**TEST, "TIMEOUT_SECONDS": "900", "POLL_SECONDS": "5"}, timeout=20)
    assert time.monotonic() - started < 5  # not 900 s, not even one poll
    assert result.returncode == 2
    assert "default/gpu-test: its image does not exist, not waiting for it" in result.stderr
    assert "(stopped waiting at once)" in json.loads(result.stdout)["pods"][0]["diagnosis"]


def test_a_slow_registry_is_waited_for(sb: StubBin):
    """A pull that times out may still succeed on the kubelet's next try: keep waiting (bounded)."""
    (case,) = [c for c in cases("test_pod") if c["case"] == "registry unreachable"]
    _place(sb, case)
    sb.add(
        "kubectl",
        body='n=$(cat "$STUB_STATE/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$STUB_STATE/n"\n'
        'if ((n >= 6)); then echo Succeeded >"$STUB_STATE/gpu-test.phase"; echo "Test PASSED" >"$STUB_STATE/gpu-test.log"; fi\n'
        + KUBECTL,
    )
    result = sb.run("80-gpu-test-result.sh", {**TEST, "TIMEOUT_SECONDS": "30"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "PASSED"


def test_pull_failures_of_the_plugin_and_the_test_give_the_same_hint(sb: StubBin):
    (sb.state / "pods-gpu-0").write_text(f"{PLUGIN_POD}\\tImagePullBackOff \\n")
    plugin = sb.run("70-gpu-allocatable.sh", ALLOC)
    (case,) = [c for c in cases("test_pod") if c["case"] == "registry unreachable"]
    _place(sb, case)
    test = sb.run("80-gpu-test-result.sh", TEST)
    assert "set gpu-k8s:registryMirrors" in plugin.stderr and "set gpu-k8s:registryMirrors" in test.stderr
