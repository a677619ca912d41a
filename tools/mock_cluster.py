"""What the GPU nodes and test pods answer offline, through the real scripts and parsers.

No hard-coded verdicts: a failing GPU test is the real ``80-gpu-test-result.sh`` (as
rendered for the node, components/steps.py) run by bash with a stub ``kubectl`` on
PATH that answers with a failing pod from a recorded failure text
(tools/fixtures/gpu-failures.json, a copy of the project's shared fixture). The
script's own parsing and diagnosis make the verdict. The script's wait loop runs on a
fake clock: ``sleep`` is a bash function that advances ``$SECONDS``, so a pod that
stays Pending reaches the script's deadline at once, as it would after TIMEOUT_SECONDS.

Group mode (a managed control plane, ACK: the checks run on the deployer through
``components/scripts/local/with-kubeconfig.sh``, the kubeconfig on stdin): node names are
unknown offline, so each node is a labelled placeholder ``<ACK node N of <key>=<value>>``
(``group_node``), the same in 70's answer and in 80's pods.

nvidia-smi's answer for the gpu-verify step comes from components/facts/nvidia_smi.py over a
recorded ``nvidia-smi`` of that GPU and driver (tests/fixtures/nvidia-smi), where one
exists; otherwise the caller uses a labelled placeholder.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAILURES = Path(__file__).resolve().parent / "fixtures" / "gpu-failures.json"
NVIDIA_SMI_FIXTURES = ROOT / "tests" / "fixtures" / "nvidia-smi"
# What the stub kubectl is given as its kubeconfig (it reads none).
FAKE_ADMIN_CONF = "apiVersion: v1\nkind: Config\nclusters: []\n"
GPU_TEST_OUTCOMES = ("passed", "failed", "timeout")
# Which recorded failure each outcome replays (the "case" of a test_pod entry).
FAILURE_CASES = {
    "failed": "seed: CUDA image newer than the driver",  # container StartError: the pod ends Failed
    "timeout": "seed: Pending, Insufficient nvidia.com/gpu",  # FailedScheduling: the pod stays Pending
}

# The label the test pods of a node group select (their nodeSelector) in group mode.
POOL_LABEL = "gpu-k8s/pool"
WITH_KUBECONFIG = "components/scripts/local/with-kubeconfig.sh"

# kubectl as the control plane would answer 70/80-*.sh, from files in $STUB_STATE: per pod
# <name>.{phase,node,log,previous,events,messages}, per node gpu-<node> (allocatable) and
# pods-<node> (the device plugin pod line), per label selector nodes-<selector, / as _>
# (`get nodes -l`: "<name>\t<allocatable>" lines); api-down makes the API refuse. The tests
# use the same body (tests/gpu_failures.py, tests/scripts/test_script_behaviour.py,
# tests/scripts/test_deployer_checks.py).
KUBECTL_STUB_BODY = r"""
[[ -e "$STUB_STATE/api-down" ]] && { echo "The connection to the server 192.0.2.10:6443 was refused" >&2; exit 1; }
name=""
case "$1 $2" in
  "get pod") name="$5";;
  "logs -n") name="$4";;
  "get events") for a in "$@"; do [[ "$a" == involvedObject.name=* ]] && name="${a#involvedObject.name=}"; done;;
esac
case "$*" in
  "get --raw=/readyz") echo -n ok;;
  "get node "*) cat "$STUB_STATE/gpu-$3" 2>/dev/null;;
  "get nodes -l "*) sel="$4"; printf '%b' "$(cat "$STUB_STATE/nodes-${sel//\//_}" 2>/dev/null)";;
  "get pods "*)
    node=""; for a in "$@"; do [[ "$a" == spec.nodeName=* ]] && node="${a#spec.nodeName=}"; done
    printf '%b' "$(cat "$STUB_STATE/pods-$node" 2>/dev/null)";;
  *"{.status.phase}"*) cat "$STUB_STATE/$name.phase" 2>/dev/null;;
  *"{.spec.nodeName}"*) cat "$STUB_STATE/$name.node" 2>/dev/null;;
  logs*--previous*) cat "$STUB_STATE/$name.previous" 2>/dev/null;;
  logs*) cat "$STUB_STATE/$name.log" 2>/dev/null;;
  "get events"*) cat "$STUB_STATE/$name.events" 2>/dev/null;;
  *containerStatuses*) cat "$STUB_STATE/$name.messages" 2>/dev/null;;
esac
"""
_KUBECTL = "#!/bin/bash\n" + KUBECTL_STUB_BODY


@cache
def failure_case(outcome: str) -> dict:
    cases = json.loads(FAILURES.read_text())["test_pod"]
    wanted = FAILURE_CASES[outcome]
    for case in cases:
        if case["case"] == wanted:
            return case
    raise KeyError(f"{FAILURES.name} has no test_pod case {wanted!r}")


def group_node(selector: str, number: int) -> str:
    """The placeholder for the ``number``-th (1-based) node with label ``selector`` (key=value)."""
    return f"<ACK node {number} of {selector}>"


def group_nodes(groups: str) -> list[tuple[str, str]]:
    """(selector, placeholder node) for each node GPU_NODE_GROUPS (``<key>=<value>:<count>``) waits for."""
    nodes = []
    for item in groups.split():
        selector, _, count = item.rpartition(":")
        nodes += [(selector, group_node(selector, i)) for i in range(1, int(count) + 1)]
    return nodes


def is_group_mode(env: dict[str, str], *, local: bool = False) -> bool:
    """Whether the checks run against node groups (a node pool names its nodes): ACK."""
    return local or env.get("NODE_SETUP") == "ack" or bool(env.get("GPU_NODE_GROUPS", "").strip())


def pod_node(pod: str, env: dict[str, str], *, group: bool = False) -> str:
    """The node a test pod runs on: ``gpu-test-<node>[-<i>]-<hash>`` names it (kubeadm); in group
    mode ``gpu-test-<pool>-<i>-<hash>`` lands on a node of the pool (anti-affinity: the i-th on
    the i-th node, PODS_PER_NODE to a node), a labelled placeholder."""
    name = pod.rsplit("/", 1)[-1].removeprefix("gpu-test-")
    per_node = int(env.get("PODS_PER_NODE") or 1)
    if group:
        pool, _, rest = name.rpartition("-")[0].rpartition("-")
        if pool and rest.isdigit():
            return group_node(f"{POOL_LABEL}={pool}", int(rest) // per_node + 1)
    node = name.rsplit("-", 1)[0]  # less the spec hash
    return node.rsplit("-", 1)[0] if per_node > 1 else node


def _pod_files(outcome: str, node: str) -> dict[str, str]:
    case = failure_case(outcome)
    if outcome == "timeout":
        # Never scheduled: no node, no log; the scheduler's event explains it.
        return {"phase": "Pending", "events": f"FailedScheduling: {case['text']}\n"}
    # The NVIDIA hook refuses to start the container: the pod fails with the runtime's message.
    return {"phase": "Failed", "node": node, "messages": f"StartError {case['text']}\n"}


def run_gpu_test_result(env: dict[str, str], outcome: str, *, local: bool = False) -> subprocess.CompletedProcess:
    """Run 80-gpu-test-result.sh with ``env`` against pods that ``outcome``: as rendered for the
    control plane (admin.conf under GPU_K8S_ROOT), or with ``local`` as the deployer runs it
    (in place, through local/with-kubeconfig.sh, the kubeconfig on stdin written under the
    temp dir: $KUBECONFIG)."""
    from components.steps import render_script

    if outcome not in FAILURE_CASES:
        raise ValueError(f"gpu-test outcome {outcome!r}: expected one of {', '.join(FAILURE_CASES)}")
    with tempfile.TemporaryDirectory(prefix="gpu-k8s-mock-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "bin").mkdir()
        (tmpdir / "state").mkdir()
        kubectl = tmpdir / "bin" / "kubectl"
        kubectl.write_text(_KUBECTL)
        kubectl.chmod(0o755)
        python = tmpdir / "bin" / "python3"
        python.symlink_to(sys.executable)
        group = is_group_mode(env, local=local)
        for pod in env.get("TEST_PODS", "").split():
            name = pod.rsplit("/", 1)[-1]
            for suffix, text in _pod_files(outcome, pod_node(pod, env, group=group)).items():
                (tmpdir / "state" / f"{name}.{suffix}").write_text(text)
        if local:
            command = ["bash", WITH_KUBECONFIG, "components/scripts/80-gpu-test-result.sh"]
        else:
            script = tmpdir / "80-gpu-test-result.sh"
            script.write_text(render_script("80-gpu-test-result.sh"))
            command = ["bash", str(script)]
            admin = tmpdir / "etc" / "kubernetes" / "admin.conf"  # 80 refuses to run without it
            admin.parent.mkdir(parents=True)
            admin.write_text(FAKE_ADMIN_CONF)
        full_env = {
            **{k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "HOME")},
            **env,
            "PATH": f"{tmpdir / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "STUB_STATE": str(tmpdir / "state"),
            "GPU_K8S_ROOT": str(tmpdir),
            "POLL_SECONDS": "60",
            # The fake clock: the script's sleeps advance bash's SECONDS instead of waiting.
            "BASH_FUNC_sleep%%": "() {  SECONDS=$((SECONDS + ${1%%.*}));\n}",
            "TMPDIR": str(tmpdir),  # with-kubeconfig.sh's kubeconfig file ($KUBECONFIG)
        }
        return subprocess.run(
            command,
            input=FAKE_ADMIN_CONF if local else "",
            cwd=ROOT,  # Pulumi runs local commands in the project directory
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def gpu_test_failure(proc: subprocess.CompletedProcess) -> str | None:
    """Why the result step fails `pulumi up` (exit non-zero, or passed=false), else None.

    passed=false counts as the step failing, as the script does once it exits non-zero on
    a FAILED/TIMEOUT verdict (branch issue-12). Before that change the script exits 0 and
    the program only logs the error, which does not fail `up` (reference §5).
    """
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = None
    passed = isinstance(report, dict) and report.get("passed") is True
    if proc.returncode == 0 and passed:
        return None
    lines = []
    if isinstance(report, dict):
        for pod in report.get("pods") or []:
            if not pod.get("passed"):
                lines.append(f"{pod.get('pod')} on {pod.get('node') or 'no node'}: {pod.get('phase')}: {pod.get('diagnosis')}")
    if not lines:
        lines.append(" ".join((proc.stderr or proc.stdout or "no output").split())[-400:])
    head = f"GPU test FAILED (80-gpu-test-result.sh exit {proc.returncode}, passed={'true' if passed else 'false'}):"
    return head + "".join(f"\n      {line}" for line in lines)


def command_line(env: dict[str, str]) -> str:
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))


@cache
def _recorded_gpus() -> tuple[tuple[str, str, int | None, str], ...]:
    """(name, driver, memory MiB, fixture) for every recorded nvidia-smi, via the real parsers."""
    from components.facts.nvidia_smi import parse_table

    found = []
    for table in sorted(NVIDIA_SMI_FIXTURES.glob("*/nvidia-smi.txt")):
        folder = table.parent
        for gpu in parse_table(table.read_text()).gpus:
            found.append((gpu.name, gpu.driver_version, gpu.memory_mib, str(folder.relative_to(ROOT))))
    return tuple(found)


def nvidia_smi_answer(expected_name: str, driver_version: str) -> tuple[str, str] | None:
    """12-gpu-verify.sh's line (name, driver, memory) from a recorded nvidia-smi of that GPU and driver."""
    for name, driver, memory, fixture in _recorded_gpus():
        if name == expected_name and driver == driver_version:
            return f"{name}, {driver}, {memory if memory is not None else '[N/A]'} MiB", fixture
    return None
