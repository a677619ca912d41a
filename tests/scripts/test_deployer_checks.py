"""The GPU checks from the deployer (a managed control plane, ACK: no SSH to any node).

70-gpu-allocatable.sh in group mode (GPU_NODE_GROUPS: node pools name their nodes),
KUBECONFIG and NODE_SETUP=ack in 70 and 80, local/with-kubeconfig.sh (the kubeconfig on
stdin, a 0600 temp file, the check's exit status passed through), steps.run_local_script
and the mocks' answers for those local commands. Real bash, the stub kubectl of
tools/mock_cluster.py (tests/gpu_failures.py), the shared failure fixture.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pulumi
import pytest
from pulumi.runtime import mocks as pulumi_mocks

from components import steps
from tests.gpu_failures import KUBECTL, cases, cluster, pod
from tests.scripts.test_gpu_diagnosis import _place
from tests.stubs import SCRIPTS_DIR, StubBin
from tools import mock_cluster
from tools.harness import is_secret, reveal
from tools.mocks import PlaceholderMocks, command_env

REPO = SCRIPTS_DIR.parent.parent
RUNNER = "components/scripts/local/with-kubeconfig.sh"
# Our node steps (12-gpu-verify, 20-container-runtime, ...): none of them runs on ACK.
STEP_NAMES = sorted(p.stem for p in SCRIPTS_DIR.glob("*.sh"))
SECRET = "client-key-data: SECRET-KEY-MATERIAL-0123456789"
KUBECONFIG_TEXT = f"apiVersion: v1\nkind: Config\nusers:\n- name: admin\n  user:\n    {SECRET}\n"
GROUPS = "gpu-k8s/pool=train:2 gpu-k8s/pool=infer:1"
ALLOC = {
    "POLL_SECONDS": "0",
    "GPU_NODE_GROUPS": GROUPS,
    "TIMEOUT_SECONDS": "0",
    "PLUGIN_NAMESPACE": "kube-system",
    "PLUGIN_SELECTOR": "component=nvidia-device-plugin",
    "NODE_SETUP": "ack",
}
TEST = {"POLL_SECONDS": "0", "TEST_PODS": "default/gpu-test", "SUCCESS_PATTERN": "Test PASSED", "TIMEOUT_SECONDS": "0"}
PLUGIN_POD = "nvidia-device-plugin-cn-hangzhou.10.0.1.24"


def nodes(sb: StubBin, selector: str, *rows: tuple[str, str]) -> None:
    """What `kubectl get nodes -l <selector>` lists: (name, allocatable nvidia.com/gpu)."""
    (sb.state / f"nodes-{selector.replace('/', '_')}").write_text("".join(f"{n}\t{g}\n" for n, g in rows))


def no_step_names(text: str) -> None:
    """No hint names one of our node steps (the log prefix and the check's own name aside)."""
    text = re.sub(r"\[gpu-k8s [\w-]+\]|\(80-gpu-test-result\.sh exit", "", text)
    for step in STEP_NAMES:
        assert step not in text, f"ACK hint names our step {step}: {text}"


@pytest.fixture
def sb(tmp_path: Path) -> StubBin:
    return StubBin(tmp_path)


@pytest.fixture
def kube(sb: StubBin) -> StubBin:
    """A cluster reached with the KUBECONFIG the deployer has: no admin.conf anywhere."""
    sb.add("kubectl", body='printf "%s\\n" "${KUBECONFIG:-unset}" >"$STUB_STATE/kubeconfig-seen"\n' + KUBECTL)
    (sb.state / "kubeconfig").write_text(KUBECONFIG_TEXT)
    return sb


def kubeconfig_env(sb: StubBin) -> dict[str, str]:
    return {"KUBECONFIG": str(sb.state / "kubeconfig")}


# ================================================================ 70: GPU_NODE_GROUPS


def test_groups_ready_print_the_real_node_names(kube: StubBin):
    nodes(kube, "gpu-k8s/pool=train", ("cn-hangzhou.10.0.1.23", "1"), ("cn-hangzhou.10.0.1.24", "1"))
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "4"))
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cn-hangzhou.10.0.1.23": 1, "cn-hangzhou.10.0.1.24": 1, "cn-hangzhou.10.0.2.7": 4}
    jsonpath = 'jsonpath={range .items[*]}{.metadata.name}{"\\t"}{.status.allocatable.nvidia\\.com/gpu}{"\\n"}{end}'
    assert kube.calls("kubectl") == [
        ["kubectl", "get", "nodes", "-l", "gpu-k8s/pool=train", "-o", jsonpath],
        ["kubectl", "get", "nodes", "-l", "gpu-k8s/pool=infer", "-o", jsonpath],
    ]
    assert (kube.state / "kubeconfig-seen").read_text().strip() == str(kube.state / "kubeconfig")


def test_group_polls_until_the_pool_has_scaled_out(kube: StubBin):
    """One call per group per poll; a ready group is not asked again."""
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"))
    nodes(kube, "gpu-k8s/pool=train", ("cn-hangzhou.10.0.1.23", "1"))
    # the second train node joins at the 3rd poll, its GPU registers at the 4th
    kube.add(
        "kubectl",
        body='n=$(cat "$STUB_STATE/n" 2>/dev/null || echo 0)\n'
        'if [[ "$4" == gpu-k8s/pool=train ]]; then n=$((n + 1)); echo $n >"$STUB_STATE/n"\n'
        '  f="$STUB_STATE/nodes-gpu-k8s_pool=train"\n'
        '  if ((n == 3)); then printf "cn-hangzhou.10.0.1.23\\t1\\ncn-hangzhou.10.0.1.24\\t\\n" >"$f"; fi\n'
        '  if ((n == 4)); then printf "cn-hangzhou.10.0.1.23\\t1\\ncn-hangzhou.10.0.1.24\\t1\\n" >"$f"; fi\n'
        "fi\n" + KUBECTL,
    )
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube), "TIMEOUT_SECONDS": "30"})
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == {"cn-hangzhou.10.0.1.23", "cn-hangzhou.10.0.1.24", "cn-hangzhou.10.0.2.7"}
    asked = [c[4] for c in kube.calls("kubectl")]
    assert asked.count("gpu-k8s/pool=train") == 4 and asked.count("gpu-k8s/pool=infer") == 1


def test_group_short_of_nodes_says_the_pool_is_still_scaling(kube: StubBin):
    nodes(kube, "gpu-k8s/pool=train", ("cn-hangzhou.10.0.1.23", "1"))
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"))
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube), "TIMEOUT_SECONDS": "0"})
    assert result.returncode == 1 and result.stdout == ""
    assert (
        "[gpu-k8s 70-gpu-allocatable] ERROR: gpu-k8s/pool=train: 1 of 2 nodes registered after 0s: "
        "the node pool is still scaling out or a node failed to join (see the node pool's scaling activities in the ACK console)"
    ) in result.stderr
    assert "pool=infer" not in result.stderr.replace("cn-hangzhou.10.0.2.7 (gpu-k8s/pool=infer): 1 allocatable", "")
    assert "node cn-hangzhou.10.0.1.23" not in result.stderr  # it has its GPU: nothing to diagnose
    no_step_names(result.stderr)


def test_group_unreachable_api_quotes_kubectl(kube: StubBin):
    (kube.state / "api-down").touch()
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube)})
    assert result.returncode == 1
    assert "gpu-k8s/pool=train: 0 of 2 nodes registered after 0s" in result.stderr
    assert "[kubectl: The connection to the server 192.0.2.10:6443 was refused]" in result.stderr


@pytest.mark.parametrize("case", cases("device_plugin_logs"), ids=lambda c: c["case"][:40])
def test_node_in_group_without_gpus_is_diagnosed_in_acks_words(kube: StubBin, case: dict):
    nodes(kube, "gpu-k8s/pool=train", ("cn-hangzhou.10.0.1.23", "1"), ("cn-hangzhou.10.0.1.24", "0"))
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"))
    (kube.state / "pods-cn-hangzhou.10.0.1.24").write_text(f"{PLUGIN_POD}\\tCrashLoopBackOff \\n")
    if "terminated.message" in case["where"]:
        pod(kube, PLUGIN_POD, messages=f"\n{case['text']}\n", log=case["logs_text"])
    else:
        pod(kube, PLUGIN_POD, log=case["text"])
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube)})
    assert result.returncode == 1 and result.stdout == ""
    assert "ERROR: node cn-hangzhou.10.0.1.24 has 0 allocatable nvidia.com/gpu (need 1) after 0s: " in result.stderr
    assert "node cn-hangzhou.10.0.1.23" not in result.stderr and "nodes registered" not in result.stderr
    assert kube.called("kubectl", "--field-selector", "spec.nodeName=cn-hangzhou.10.0.1.24")
    assert "component=nvidia-device-plugin" in sum(kube.calls("kubectl"), [])  # ACK's plugin, as passed
    hint = re.search(r"after 0s: (.*)", result.stderr)[1]
    assert "ack.aliyun.com/nvidia-driver-version" in hint or "ACK's GPU image" in hint, hint
    no_step_names(result.stderr)


def test_a_missing_plugin_pod_on_ack_names_acks_plugin(kube: StubBin):
    nodes(kube, "gpu-k8s/pool=train", ("cn-hangzhou.10.0.1.23", ""), ("cn-hangzhou.10.0.1.24", ""))
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"))
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube)})
    assert result.stderr.count("no device plugin pod on the node (ACK's device plugin:") == 2
    no_step_names(result.stderr)


def test_group_mode_with_gpu_k8s_nodes_keeps_our_hints(kube: StubBin):
    nodes(kube, "gpu-k8s/pool=train", ("train-0", "1"))
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube), "NODE_SETUP": "gpu-k8s"})
    assert "1 of 2 nodes registered after 0s: the node pool is still scaling out or a node failed to join" in result.stderr
    assert "50-kubeadm-join" in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GPU_NODES": "gpu-0"}, "GPU_NODES and GPU_NODE_GROUPS are both set: pass exactly one"),
        ({"GPU_NODE_GROUPS": " "}, "GPU_NODES is empty (and GPU_NODE_GROUPS is not set)"),
        ({"GPU_NODE_GROUPS": "gpu-k8s/pool=train"}, "got 'gpu-k8s/pool=train'"),
        ({"GPU_NODE_GROUPS": "gpu-k8s/pool=train:0"}, "<label-key>=<label-value>:<count>"),
        ({"GPU_NODE_GROUPS": "gpu-k8s/pool=:2"}, "got 'gpu-k8s/pool=:2'"),
        ({"GPU_NODE_GROUPS": "pool=a;b:2"}, "got 'pool=a;b:2'"),
        ({"NODE_SETUP": "eks"}, "NODE_SETUP must be gpu-k8s or ack (got 'eks')"),
    ],
)
def test_group_mode_rejects_bad_inputs(kube: StubBin, env: dict, message: str):
    result = kube.run("70-gpu-allocatable.sh", {**ALLOC, **kubeconfig_env(kube), **env})
    assert result.returncode == 1 and "[gpu-k8s 70-gpu-allocatable] ERROR: " in result.stderr
    assert message in result.stderr, result.stderr
    assert not kube.calls("kubectl")


def test_group_mode_accepts_dotted_keys_and_values(kube: StubBin):
    nodes(kube, "node.kubernetes.io/instance-type=ecs.gn7i-c8g1.2xlarge", ("cn-hangzhou.10.0.1.23", "1"))
    env = {**ALLOC, **kubeconfig_env(kube), "GPU_NODE_GROUPS": "node.kubernetes.io/instance-type=ecs.gn7i-c8g1.2xlarge:1"}
    result = kube.run("70-gpu-allocatable.sh", env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"cn-hangzhou.10.0.1.23": 1}


def test_group_mode_skips_what_is_not_a_node_name(kube: StubBin):
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"), ('evil"name', "1"), ("", "1"))
    env = {**ALLOC, **kubeconfig_env(kube), "GPU_NODE_GROUPS": "gpu-k8s/pool=infer:1"}
    assert json.loads(kube.run("70-gpu-allocatable.sh", env).stdout) == {"cn-hangzhou.10.0.2.7": 1}


# ================================================================ KUBECONFIG in 70 and 80


def test_80_reads_the_cluster_with_the_given_kubeconfig(kube: StubBin):
    pod(kube, "gpu-test", phase="Succeeded", node="cn-hangzhou.10.0.1.23", log="Test PASSED\n")
    result = kube.run("80-gpu-test-result.sh", {**TEST, **kubeconfig_env(kube), "NODE_SETUP": "ack"})
    assert result.returncode == 0, result.stderr
    [report] = json.loads(result.stdout)["pods"]
    assert report["node"] == "cn-hangzhou.10.0.1.23"  # .spec.nodeName, not derived from the pod name
    assert kube.called("kubectl", "get", "pod", "-n", "default", "gpu-test", "-o", "jsonpath={.spec.nodeName}")
    assert (kube.state / "kubeconfig-seen").read_text().strip() == str(kube.state / "kubeconfig")
    assert not (kube.root / "etc").exists()


@pytest.mark.parametrize(("script", "env"), [("70-gpu-allocatable.sh", ALLOC), ("80-gpu-test-result.sh", TEST)])
def test_a_missing_kubeconfig_is_a_clear_error(kube: StubBin, script: str, env: dict):
    step = script.removesuffix(".sh")
    gone = str(kube.state / "nowhere.conf")
    result = kube.run(script, {**env, "KUBECONFIG": gone})
    assert result.returncode == 1 and f"[gpu-k8s {step}] ERROR: KUBECONFIG={gone}: no such file" in result.stderr
    result = kube.run(script, env)  # neither KUBECONFIG nor the control plane's admin.conf
    assert result.returncode == 1
    assert f"[gpu-k8s {step}] ERROR: /etc/kubernetes/admin.conf not found" in result.stderr
    assert not kube.calls("kubectl")


def test_80_unreachable_api_names_the_kubeconfig_it_used(kube: StubBin):
    (kube.state / "api-down").touch()
    result = kube.run("80-gpu-test-result.sh", {**TEST, **kubeconfig_env(kube)})
    assert result.returncode == 1 and "kubectl cannot reach the API server with the kubeconfig in $KUBECONFIG" in result.stderr


def test_admin_conf_is_still_the_default_on_the_control_plane(sb: StubBin):
    cluster(sb)
    pod(sb, "gpu-test", phase="Succeeded", node="gpu-0", log="Test PASSED\n")
    sb.add("kubectl", body='printf "%s\\n" "$KUBECONFIG" >"$STUB_STATE/kubeconfig-seen"\n' + KUBECTL)
    assert sb.run("80-gpu-test-result.sh", TEST).returncode == 0
    assert (sb.state / "kubeconfig-seen").read_text().strip() == str(sb.root / "etc/kubernetes/admin.conf")


# ================================================================ 80: NODE_SETUP=ack


@pytest.mark.parametrize("case", cases("test_pod"), ids=lambda c: c["case"][:40])
def test_ack_hints_for_every_test_pod_failure_name_no_step(kube: StubBin, case: dict):
    _place(kube, case)  # where the fixture says the kubelet reports it
    ack = kube.run("80-gpu-test-result.sh", {**TEST, **kubeconfig_env(kube), "NODE_SETUP": "ack"})
    ours = kube.run("80-gpu-test-result.sh", {**TEST, **kubeconfig_env(kube)})
    assert ack.returncode == ours.returncode and ack.returncode in (2, 3)
    [ack_pod], [our_pod] = json.loads(ack.stdout)["pods"], json.loads(ours.stdout)["pods"]
    no_step_names(ack_pod["diagnosis"] + ack.stderr)
    # the same cause, named before the hint
    assert ack_pod["diagnosis"].split(":")[0] == our_pod["diagnosis"].split(":")[0]


def test_ack_newer_driver_hint_names_the_driver_label(kube: StubBin):
    pod(
        kube,
        "gpu-test",
        phase="Failed",
        node="cn-hangzhou.10.0.1.23",
        messages="StartError nvidia-container-cli: requirement error: unsatisfied condition: cuda>=12.5\n",
    )
    result = kube.run("80-gpu-test-result.sh", {**TEST, **kubeconfig_env(kube), "NODE_SETUP": "ack"})
    [report] = json.loads(result.stdout)["pods"]
    assert report["diagnosis"] == (
        "the image needs a newer driver (unsatisfied condition: cuda>=12.5): use an image for an older CUDA, "
        "or a newer driver (the node pool's ack.aliyun.com/nvidia-driver-version label)"
    )
    assert "ERROR: default/gpu-test on cn-hangzhou.10.0.1.23: Failed:" in result.stderr


# ================================================================ local/with-kubeconfig.sh

PROBE = r"""#!/usr/bin/env bash
# 99-probe.sh: what a check sees, run through with-kubeconfig.sh.
set -euo pipefail
main() {
  stat -c '%a' "$KUBECONFIG" >"$PROBE_DIR/mode"
  printf '%s' "$KUBECONFIG" >"$PROBE_DIR/path"
  cp "$KUBECONFIG" "$PROBE_DIR/copy"
  [[ -t 0 ]] || cat >"$PROBE_DIR/stdin"
  printf '%s\n' "${CHECK_INPUT:-}"
  exit "${PROBE_EXIT:-0}"
}
main "$@"
"""


def deployer(sb: StubBin, *args: str, stdin: str = KUBECONFIG_TEXT, **env: str) -> subprocess.CompletedProcess:
    """with-kubeconfig.sh as Pulumi runs it: from the project directory, relative paths."""
    full_env = {
        "PATH": str(sb.dir),
        "HOME": str(sb.state),
        "STUB_STATE": str(sb.state),
        "TMPDIR": str(sb.state.parent / "tmp"),
        "LANG": "C.UTF-8",
        **env,
    }
    Path(full_env["TMPDIR"]).mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", RUNNER, *args], input=stdin, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def probe(kube: StubBin) -> tuple[StubBin, str]:
    script = kube.state.parent / "checks" / "99-probe.sh"
    script.parent.mkdir()
    script.write_text(PROBE)
    return kube, str(script)


def leftovers(sb: StubBin) -> list[str]:
    return sorted(os.listdir(sb.state.parent / "tmp"))


@pytest.mark.parametrize("code", [0, 1, 2, 3])
def test_runner_passes_the_kubeconfig_as_a_0600_file_and_the_exit_status_through(probe, code: int):
    sb, script = probe
    result = deployer(sb, script, PROBE_DIR=str(sb.state), PROBE_EXIT=str(code), CHECK_INPUT="x y")
    assert result.returncode == code, result.stderr
    assert result.stdout == "x y\n"  # the check's stdout, unchanged; its inputs passed through
    assert (sb.state / "mode").read_text().strip() == "600"
    assert (sb.state / "copy").read_text() == KUBECONFIG_TEXT
    assert (sb.state / "path").read_text().startswith(str(sb.state.parent / "tmp") + "/")
    assert (sb.state / "stdin").read_text() == ""  # the check gets no stdin (the secret is not replayed)
    assert leftovers(sb) == [] and not Path((sb.state / "path").read_text()).exists()
    assert SECRET not in result.stdout + result.stderr


def test_runner_without_kubectl_says_how_to_get_it(probe):
    sb, script = probe
    (sb.dir / "kubectl").unlink()
    result = deployer(sb, script, PROBE_DIR=str(sb.state))
    assert result.returncode == 1
    assert (
        "[gpu-k8s with-kubeconfig] ERROR: kubectl not found on this machine: the ACK backend runs the GPU checks from here; "
        "install kubectl"
    ) in result.stderr
    assert not (sb.state / "mode").exists() and leftovers(sb) == []
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("tool", "message"),
    [("timeout", "timeout not found on this machine (GNU coreutils"), ("python3", "python3 not found on this machine")],
)
def test_runner_names_a_missing_tool(probe, tool: str, message: str):
    sb, script = probe
    (sb.dir / tool).unlink()
    result = deployer(sb, script, PROBE_DIR=str(sb.state))
    assert result.returncode == 1 and f"[gpu-k8s with-kubeconfig] ERROR: {message}" in result.stderr
    assert not (sb.state / "mode").exists() and leftovers(sb) == []


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ((), KUBECONFIG_TEXT, "usage: with-kubeconfig.sh"),
        (("components/scripts/lib/common.sh",), KUBECONFIG_TEXT, "is not a check script"),
        (("components/scripts/79-nothing.sh",), KUBECONFIG_TEXT, "components/scripts/79-nothing.sh not found"),
        (("components/scripts/70-gpu-allocatable.sh",), "", "no kubeconfig on stdin"),
    ],
)
def test_runner_refuses_what_it_cannot_run(kube: StubBin, args, stdin, message):
    result = deployer(kube, *args, stdin=stdin)
    assert result.returncode == 1 and "[gpu-k8s with-kubeconfig] ERROR: " in result.stderr and message in result.stderr
    assert leftovers(kube) == [] and not kube.calls("kubectl")


@pytest.mark.parametrize(
    ("script", "phase", "files", "code"),
    [
        ("80-gpu-test-result.sh", "Succeeded", {"log": "Test PASSED\n"}, 0),
        ("80-gpu-test-result.sh", "Failed", {"messages": "StartError nvml error: driver not loaded\n"}, 2),
        ("80-gpu-test-result.sh", "Pending", {"events": "FailedScheduling: 0/1 nodes are available\n"}, 3),
        ("70-gpu-allocatable.sh", "", {}, 1),
    ],
)
def test_runner_runs_the_real_checks_in_place(kube: StubBin, script: str, phase: str, files: dict, code: int):
    pod(kube, "gpu-test", phase=phase, node="cn-hangzhou.10.0.1.23", **files)
    nodes(kube, "gpu-k8s/pool=infer", ("cn-hangzhou.10.0.2.7", "1"))
    env = {**(TEST if script.startswith("80") else ALLOC), "NODE_SETUP": "ack"}
    result = deployer(kube, f"components/scripts/{script}", **env)
    assert result.returncode == code, result.stderr
    if script.startswith("80"):
        assert json.loads(result.stdout)["pods"][0]["node"] == "cn-hangzhou.10.0.1.23"
    seen = (kube.state / "kubeconfig-seen").read_text().strip()
    assert seen.startswith(str(kube.state.parent / "tmp") + "/gpu-k8s-kubeconfig.") and not Path(seen).exists()
    assert leftovers(kube) == []
    assert SECRET not in result.stdout + result.stderr
    assert not any(SECRET in arg for call in kube.calls() for arg in call)  # never on any argv


def test_runner_reuses_the_last_result_when_only_the_kubeconfig_changed(probe):
    """An update whose inputs digest is the one recorded (another engineer's credential): the
    last result is printed and the cluster is not asked; another digest runs the check."""
    sb, script = probe
    first = deployer(sb, script, PROBE_DIR=str(sb.state), CHECK_INPUT="fresh", GPU_K8S_CHECK_INPUTS="abc123")
    assert first.returncode == 0 and first.stdout == "fresh\n"
    assert first.stderr.splitlines()[-1] == "check-inputs: abc123"
    (sb.state / "copy").unlink()
    previous = {"PULUMI_COMMAND_STDOUT": "fresh", "PULUMI_COMMAND_STDERR": "noise\n" + first.stderr}
    again = deployer(sb, script, PROBE_DIR=str(sb.state), CHECK_INPUT="new", GPU_K8S_CHECK_INPUTS="abc123", **previous)
    assert again.returncode == 0 and again.stdout == "fresh\n" and "its last result stands" in again.stderr
    assert not (sb.state / "copy").exists() and leftovers(sb) == []  # the check did not run
    changed = deployer(sb, script, PROBE_DIR=str(sb.state), CHECK_INPUT="new", GPU_K8S_CHECK_INPUTS="def456", **previous)
    assert changed.stdout == "new\n" and (sb.state / "copy").exists()  # other inputs: the check runs
    failing = deployer(sb, script, PROBE_DIR=str(sb.state), PROBE_EXIT="2", GPU_K8S_CHECK_INPUTS="abc123")
    assert failing.returncode == 2 and "check-inputs:" not in failing.stderr  # a failure is never a result to reuse


# ================================================================ steps.run_local_script


def test_local_command_is_relative_and_quoted():
    env = {"GPU_NODE_GROUPS": GROUPS, "NODE_SETUP": "ack", "SUCCESS_PATTERN": "Test PASSED"}
    assert steps.render_local_command("70-gpu-allocatable.sh", env) == (
        "GPU_NODE_GROUPS='gpu-k8s/pool=train:2 gpu-k8s/pool=infer:1' NODE_SETUP=ack SUCCESS_PATTERN='Test PASSED' "
        "bash components/scripts/local/with-kubeconfig.sh components/scripts/70-gpu-allocatable.sh"
    )
    assert steps.render_local_command("80-gpu-test-result.sh", {}) == (
        "bash components/scripts/local/with-kubeconfig.sh components/scripts/80-gpu-test-result.sh"
    )
    assert command_env(steps.render_local_command("70-gpu-allocatable.sh", env)) == env
    with pytest.raises(FileNotFoundError):
        steps.render_local_command("71-missing.sh", {})
    assert (REPO / RUNNER).is_file() and str(REPO) not in steps.render_local_command("80-gpu-test-result.sh", {})


class _Recording(PlaceholderMocks):
    def __init__(self):
        super().__init__()
        self.created: dict[str, pulumi_mocks.MockResourceArgs] = {}

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        self.created[args.name] = args
        return super().new_resource(args)


@pytest.fixture
def recording():
    from conftest import installed

    with installed(_Recording()) as mocks:
        yield mocks


@pulumi.runtime.test
def test_run_local_script_under_the_mocks(recording):
    parent = pulumi.ComponentResource("test:index:Parent", "p")
    before = steps.run_local_script(
        "p-gpu-allocatable",
        script="70-gpu-allocatable.sh",
        kubeconfig="KUBECONFIG-TEXT",
        env={"GPU_NODE_GROUPS": GROUPS, "NODE_SETUP": "ack", "MIN_GPUS_PER_NODE": pulumi.Output.from_input("2")},
        parent=parent,
    )
    check = steps.run_local_script(
        "p-gpu-test-result",
        script="80-gpu-test-result.sh",
        kubeconfig=pulumi.Output.from_input("KUBECONFIG-TEXT"),
        env={"TEST_PODS": "default/gpu-test-train-0-abc123", "SUCCESS_PATTERN": "Test PASSED", "NODE_SETUP": "ack"},
        after=[before],
        parent=parent,
        timeout="7m",
        extra_triggers=["image:1"],
    )
    assert isinstance(check, pulumi_command_local_command())

    def verify(values):
        allocatable, result = values
        args = recording.created["p-gpu-test-result"]
        inputs = args.inputs
        digest = steps._check_inputs_digest(  # noqa: SLF001
            "80-gpu-test-result.sh",
            {"NODE_SETUP": "ack", "SUCCESS_PATTERN": "Test PASSED", "TEST_PODS": "default/gpu-test-train-0-abc123"},
        )
        assert inputs["create"] == (
            f"GPU_K8S_CHECK_INPUTS={digest} NODE_SETUP=ack SUCCESS_PATTERN='Test PASSED' "
            "TEST_PODS=default/gpu-test-train-0-abc123 "
            "bash components/scripts/local/with-kubeconfig.sh components/scripts/80-gpu-test-result.sh"
        )
        assert is_secret(inputs["stdin"]) and reveal(inputs["stdin"]) == "KUBECONFIG-TEXT"
        assert inputs["triggers"] == [
            steps.script_hash("80-gpu-test-result.sh"),
            steps.script_hash("local/with-kubeconfig.sh"),
            "<p-gpu-allocatable id>",
            "image:1",
        ]
        # the last result is passed back on an update: a new kubeconfig alone reuses it (with-kubeconfig.sh)
        assert inputs["logging"] == "stdoutAndStderr" and inputs["addPreviousOutputInEnv"] is True
        # the mocks answer the deployer's checks like the remote ones, with group placeholders
        assert json.loads(allocatable) == {
            "<ACK node 1 of gpu-k8s/pool=train>": 2,
            "<ACK node 2 of gpu-k8s/pool=train>": 2,
            "<ACK node 1 of gpu-k8s/pool=infer>": 2,
        }
        assert "<ACK node 1 of gpu-k8s/pool=train>" in recording.placeholders
        [pod_result] = json.loads(result)["pods"]
        assert pod_result["node"] == "<ACK node 1 of gpu-k8s/pool=train>" and pod_result["passed"] is True

    return pulumi.Output.all(before.stdout, check.stdout).apply(verify)


def pulumi_command_local_command():
    import pulumi_command

    return pulumi_command.local.Command


# ================================================================ the mocks' replays in group mode


def _local_check(mocks: PlaceholderMocks, name: str, env: dict[str, str]):
    create = steps.render_local_command("80-gpu-test-result.sh" if "result" in name else "70-gpu-allocatable.sh", env)
    args = pulumi_mocks.MockResourceArgs("command:local:Command", name, {"create": create}, "", "", False)
    return mocks.new_resource(args)[1]


@pytest.mark.parametrize(
    ("outcome", "code", "node", "cause"),
    [
        ("failed", 2, "<ACK node 2 of gpu-k8s/pool=train>", "ack.aliyun.com/nvidia-driver-version"),
        ("timeout", 3, "", "Insufficient nvidia.com/gpu"),
    ],
)
def test_failure_replays_work_in_group_mode(outcome: str, code: int, node: str, cause: str):
    mocks = PlaceholderMocks(gpu_test=outcome)
    env = {
        "TEST_PODS": "default/gpu-test-train-0-abc123 default/gpu-test-train-1-abc123",
        "SUCCESS_PATTERN": "Test PASSED",
        "TIMEOUT_SECONDS": "900",
        "NODE_SETUP": "ack",
    }
    out = _local_check(mocks, "smoke-gpu-test-result", env)
    report = json.loads(out["stdout"])
    assert report["verdict"] == ("FAILED" if code == 2 else "TIMEOUT")
    assert report["pods"][1]["node"] == node and cause in report["pods"][1]["diagnosis"]
    [failure] = mocks.failures
    assert failure.startswith(f"smoke-gpu-test-result: GPU test FAILED (80-gpu-test-result.sh exit {code}")
    no_step_names(failure)
    # the same replay through the control plane's rendered script still works (admin.conf)
    proc = mock_cluster.run_gpu_test_result({**env, "NODE_SETUP": "gpu-k8s"}, outcome)
    assert proc.returncode == code and "admin.conf" not in proc.stderr


def test_a_timestamp_local_command_is_not_mistaken_for_a_check():
    mocks = PlaceholderMocks(clock=lambda: 1_700_000_000.0)
    args = pulumi_mocks.MockResourceArgs("command:local:Command", "gpu-0-ttl-anchor", {"create": "date -u +%s"}, "", "", False)
    assert mocks.new_resource(args)[1]["stdout"] == "1700000000"
    args = pulumi_mocks.MockResourceArgs(
        "command:local:Command", "x-gpu-allocatable", {"create": "date -u +%s"}, "", "", False
    )  # a check's name alone is not enough: it must run with-kubeconfig.sh
    assert mocks.new_resource(args)[1]["stdout"] == "1700000000"


def test_command_env_stops_at_the_command():
    create = "A=1 B='x y' bash components/scripts/local/with-kubeconfig.sh components/scripts/70-gpu-allocatable.sh C=3"
    assert command_env(create) == {"A": "1", "B": "x y"}
