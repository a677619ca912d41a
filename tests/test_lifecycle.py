"""Day 2 on the real engine (issue 20): each change a second `pulumi up` may meet, on the model.

The model (tools/engine.py, tools/mocks.py) follows the engine where a green mock suite used
to be kinder: a CopyToRemote whose only change is its connection copies nothing, and a step
that then runs finds no script (exit 127); a replaced key is a new key; a new cluster is a new
CA; the lifecycle guard's real script decides what is refused; a failed `up` deletes nothing
and keeps the previous outputs. Each scenario runs the real program twice.
"""

from __future__ import annotations

import json

import pytest
from helpers import HOUR, IMAGE, T0, changes, world

from components import steps
from tools import plan
from tools.engine import CREATE, DELETE, REPLACE, SAME, UPDATE
from tools.harness import ProgramRun, run_program

NEWER = "m-bp1ubuntu2204b"
COPY, REMOTE_STEP = "command:remote:CopyToRemote", "command:remote:Command"
GUARD = "gpu-k8s-lifecycle-guard"
CHECKS = ("gpu-k8s-smoke-gpu-allocatable", "gpu-k8s-smoke-gpu-test-result")


def on_node(run: ProgramRun, node: str, type_: str) -> list[str]:
    """The resources of ``type_`` that reach ``node``'s instance (their connection depends on it)."""
    urn = run.named(f"{node}-instance").urn
    return [r.name for r in run.resources if r.type == type_ and urn in r.property_dependencies.get("connection", [])]


def second(stack: str, first: ProgramRun, config: dict | None = None, *, replace=(), **facts) -> ProgramRun:
    return run_program(stack, config or {}, mocks=world(T0 + HOUR, **facts), previous=first, replace=list(replace))


def urns(run: ProgramRun, *names: str) -> list[str]:
    return [run.named(n).urn for n in names]


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program("dev", mocks=world())


@pytest.fixture(scope="module")
def mixed() -> ProgramRun:
    return run_program("mixed", mocks=world())


@pytest.fixture(scope="module")
def ack() -> ProgramRun:
    return run_program("ack", mocks=world())


def assert_node_set_up_anew(run: ProgramRun, node: str) -> None:
    """Every copy to the node's new instance copies (replaced), and every step there runs again."""
    diff = changes(run)
    copies, steps = on_node(run, node, COPY), on_node(run, node, REMOTE_STEP)
    assert copies and steps
    for name in copies + steps:
        assert diff.get(name) == (REPLACE, ("triggers",)), name
    # the local wait for a reboot by driver-prepare runs again for the new host
    assert diff.get(f"{node}-bootstrap-settle") == (UPDATE, ("create",))
    assert not run.errors


# --- a replaced instance gets its scripts, and every step runs again ------------------------


def test_replace_node_of_a_worker_sets_the_new_instance_up_from_scratch(mixed):
    run = second("mixed", mixed, replace=urns(mixed, "infer-1-image", "infer-1-instance", "infer-1-ttl-anchor"), image=NEWER)
    assert_node_set_up_anew(run, "infer-1")
    assert run.named("infer-1-instance").inputs["imageId"] == NEWER
    # no other node is touched (their image records see the newer image and keep their own), and
    # no copy anywhere is updated on its connection alone
    others = {n: d for n, d in changes(run).items() if n.startswith(("train-", "infer-0", "infer-2", "infer-3"))}
    assert set(others.values()) == {(UPDATE, ("create",))} and all(n.endswith("-image") for n in others)
    assert all(
        r.inputs["imageId"] == IMAGE for r in run.of_type("alicloud:ecs/instance:Instance") if r.name != "infer-1-instance"
    )
    assert not [n for n, (op, keys) in changes(run).items() if op == UPDATE and keys == ("connection",)]


def test_the_model_catches_a_copy_that_does_not_follow_its_instance(mixed, monkeypatch):
    """The defect a kinder mock hid: copies triggered by the script alone. On a replaced
    instance they are only updated (copying nothing), and the first step fails with exit 127."""
    monkeypatch.setattr(steps, "copy_triggers", lambda script, on: [steps.script_hash(script)])
    before = run_program("mixed", mocks=world())
    run = second("mixed", before, replace=urns(before, "infer-1-instance"))
    assert changes(run)["infer-1-bootstrap-wait-boot-copy"][0] == UPDATE
    [error] = run.errors
    assert error.startswith("infer-1-bootstrap-wait-boot: bash: /opt/gpu-k8s/00-wait-boot.sh: No such file or directory")


def test_spot_on_a_one_node_stack_rebuilds_the_cluster_on_the_new_instance(dev):
    run = second("dev", dev, {"gpu-k8s:spot": "true"}, image=NEWER)
    diff = changes(run)
    assert diff["gpu-0-instance"] == (REPLACE, ("spotStrategy",))
    assert run.named("gpu-0-instance").inputs["imageId"] == NEWER  # the image record re-read for the new instance
    assert diff["gpu-0-image"] == (UPDATE, ("create",)) and diff["gpu-0-ttl-anchor"] == (REPLACE, ("triggers",))
    assert_node_set_up_anew(run, "gpu-0")  # kubeadm init, kubeconfig and the checks included: they run there
    assert diff["gpu-k8s-kubeadm-init"] == (REPLACE, ("triggers",))
    assert diff["gpu-k8s-k8s"] == (REPLACE, ("kubeconfig",))  # a new cluster, a new CA
    k8s_objects = [r.name for r in run.resources if r.type.startswith("kubernetes:")]
    assert k8s_objects and all(diff[n][0] == REPLACE for n in k8s_objects)
    [note] = plan.day2_notes(run)
    assert note.startswith("REBUILD: the control-plane instance gpu-0-instance is replaced (spotStrategy)")


def test_a_price_limit_on_mixed_replaces_every_instance_and_rejoins_every_worker(mixed):
    run = second("mixed", mixed, {"gpu-k8s:spot": "true", "gpu-k8s:spotPriceLimit": "3.5"})
    diff = changes(run)
    nodes = [r.name.removesuffix("-instance") for r in run.of_type("alicloud:ecs/instance:Instance")]
    assert len(nodes) == 6  # mixed: 2 train + 4 infer
    for node in nodes:
        assert diff[f"{node}-instance"] == (REPLACE, ("spotPriceLimit", "spotStrategy"))
        assert_node_set_up_anew(run, node)
    for node in set(nodes) - {"train-0"}:  # joined to the new cluster (50-kubeadm-join leaves the old one)
        assert diff[f"{node}-kubeadm-join"] == (REPLACE, ("triggers",))
    assert any(n.startswith("REBUILD: the control-plane instance train-0-instance") for n in plan.day2_notes(run))


def test_replace_node_of_the_control_plane_needs_rebuild_yes_then_rebuilds(dev, tmp_path):
    """`make replace-node` refuses the control plane without REBUILD=yes (the recipe run for real,
    with a stand-in for the offline plan that answers as it would for dev: gpu-0 has no join)."""
    import subprocess

    from tools.harness import ROOT

    (tmp_path / ".installed").touch()  # the venv is there: no install
    stand_in = tmp_path / "python"
    stand_in.write_text('#!/bin/sh\ncase "$*" in *instance*) echo urn:pulumi:dev::gpu-k8s::x::gpu-0-instance;; esac\n')
    stand_in.chmod(0o755)

    def make(*args: str) -> subprocess.CompletedProcess:
        argv = ["make", "-s", "-C", str(ROOT), "replace-node", "STACK=dev", "NODE=gpu-0", f"VENV={tmp_path}", f"PY={stand_in}"]
        return subprocess.run([*argv, *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})

    refused = make()
    assert refused.returncode == 2 and "is the control plane" in refused.stderr and "REBUILD=yes" in refused.stderr
    assert "pulumi: " in make("REBUILD=yes").stderr or make("REBUILD=yes").returncode != 2  # goes on to `pulumi up`
    run = second("dev", dev, replace=urns(dev, "gpu-0-image", "gpu-0-instance", "gpu-0-ttl-anchor"))
    assert changes(run)["gpu-0-instance"] == (REPLACE, ("--replace",)) and not run.errors
    assert_node_set_up_anew(run, "gpu-0")


# --- a new SSH key ---------------------------------------------------------------------


def test_key_rotation_reboots_every_instance_and_runs_every_step_again(mixed):
    run = second("mixed", mixed, replace=urns(mixed, "gpu-k8s-ssh-private-key"))
    diff = changes(run)
    assert diff["gpu-k8s-ssh-key-pair"] == (REPLACE, ("keyPairName",))
    by_name = {c.name: c for c in run.changes}
    instances, copies = run.of_type("alicloud:ecs/instance:Instance"), run.of_type(COPY)
    assert len(instances) == 6 and copies
    for inst in instances:
        assert diff[inst.name] == (UPDATE, ("keyName",)) and "reboots" in by_name[inst.name].note
    steps = [r.name for r in run.of_type(REMOTE_STEP)]
    assert steps and all(diff[s] == (UPDATE, ("connection",)) for s in steps)  # each runs again, on the same hosts
    assert all("copies nothing" in by_name[c.name].note for c in copies)  # the files are still there
    assert not run.errors and "gpu-k8s-k8s" not in diff  # the cluster stays


# --- refused before anything moves -------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "config", "key"),
    [
        ("dev", {"alicloud:region": "cn-beijing"}, "alicloud:region"),
        ("ack", {"alicloud:region": "cn-shanghai"}, "alicloud:region"),
        (
            "mixed",
            {"gpu-k8s:nodePools": [{"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4}]},
            "control-plane",
        ),
        (
            "mixed",
            {
                "gpu-k8s:nodePools": [
                    {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4},
                    {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2},
                ]
            },
            "control-plane",
        ),
        ("dev", {"gpu-k8s:controlPlaneInstanceType": "ecs.g7.large"}, "control-plane"),
        ("dev", {"gpu-k8s:kubernetesVersion": "1.34.3"}, "gpu-k8s:kubernetesVersion"),
        ("mixed", {"gpu-k8s:podCidr": "10.250.0.0/16"}, "gpu-k8s:podCidr"),
        (
            "dev",
            {
                "gpu-k8s:cluster": "ack",
                "gpu-k8s:instanceType": "",
                "gpu-k8s:nodePools": [{"name": "gpu", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 1}],
            },
            "gpu-k8s:cluster",
        ),
    ],  # fmt: skip
    ids=["region", "region-ack", "first-pool-removed", "pools-reordered", "cp-added", "k8s-version", "pod-cidr", "backend"],
)
def test_what_cannot_change_in_place_is_refused_and_nothing_else_moves(request, stack, config, key):
    first = request.getfixturevalue(stack)
    run = second(stack, first, config)
    [error] = run.errors
    assert error.startswith(f"{GUARD}: refused: {key} changed from ") and "make down, then make up" in error
    assert changes(run) == {GUARD: (UPDATE, ("create",))}  # nothing created, updated, replaced or deleted
    assert {c.urn for c in run.changes} == {r.urn for r in first.resources}
    assert run.outputs_kept and run.outputs == first.outputs


def test_removing_a_dedicated_control_plane_is_refused_too():
    first = run_program("p4", {"gpu-k8s:controlPlaneInstanceType": "ecs.g7.large"}, mocks=world())
    run = second("p4", first)
    assert run.errors[0].startswith(f"{GUARD}: refused: control-plane changed from control-plane to gpu-0")


def test_what_may_change_in_place_goes_through(ack, mixed):
    upgraded = second("ack", ack, {"gpu-k8s:ackKubernetesVersion": "1.35.1-aliyun.1"})
    assert not upgraded.errors and changes(upgraded)["gpu-k8s-control-plane"][0] == UPDATE
    scaled = second("mixed", mixed, {"gpu-k8s:nodePools": [
        {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 1},
        {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4}]})  # fmt: skip
    assert not scaled.errors and changes(scaled)["train-1-instance"] == (DELETE, ())


# --- the GPU checks follow what they verify --------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "config"),
    [
        ("p4", {"gpu-k8s:driverVersion": "550.163.01"}),
        ("p4", {"gpu-k8s:instanceType": "ecs.gn6i-c4g1.xlarge"}),
        ("dev", {"gpu-k8s:devicePluginVersion": "v0.17.0"}),
        ("dev", {"gpu-k8s:containerToolkitVersion": "1.18.0"}),
        ("dev", {"gpu-k8s:timeSlicingReplicas": "2"}),
    ],
    ids=["driver", "instance-type", "device-plugin", "toolkit", "time-slicing"],
)
def test_a_change_to_what_the_gpu_test_verified_runs_it_again(request, stack, config):
    first = request.getfixturevalue(stack) if stack == "dev" else run_program(stack, mocks=world())
    run = second(stack, first, config)
    diff = changes(run)
    assert diff["gpu-k8s-smoke-gpu-allocatable"] == (REPLACE, ("triggers",))
    assert diff["gpu-k8s-smoke-gpu-test-result"] == (UPDATE, ("create",))  # TEST_PODS: the new pods
    pods = [n for n in diff if n.startswith("gpu-k8s-smoke-pod-")]
    assert pods and all(diff[p][0] in (REPLACE, CREATE, DELETE) for p in pods)
    assert not run.errors


def test_an_ack_cluster_replacement_moves_every_object_and_check_to_the_new_cluster(ack):
    run = second("ack", ack, {"gpu-k8s:podCidr": "172.30.0.0/16"})
    diff = changes(run)
    assert diff["gpu-k8s-control-plane"] == (REPLACE, ("podCidr",))
    assert diff["gpu-k8s-k8s"] == (REPLACE, ("kubeconfig",))
    k8s_objects = [r.name for r in run.resources if r.type.startswith("kubernetes:")]
    assert k8s_objects and all(diff[n][0] == REPLACE for n in k8s_objects)
    # the checks read the new cluster: a new kubeconfig on stdin (no ignore_changes), and run again
    assert diff["gpu-k8s-smoke-gpu-allocatable"] == (REPLACE, ("triggers",))
    assert "stdin" in diff["gpu-k8s-smoke-gpu-test-result"][1]
    assert "ignoreChanges" not in json.dumps(run.named("gpu-k8s-smoke-gpu-test-result").options).replace(
        '"ignoreChanges": []', ""
    )
    assert plan.day2_notes(run)[0].startswith("REBUILD: the ACK cluster gpu-k8s-control-plane is replaced (podCidr")


# --- a failed day-2 up --------------------------------------------------------------------


def test_a_failed_day2_gpu_test_keeps_the_previous_outputs_and_says_so(dev):
    run = second("dev", dev, {"gpu-k8s:gpuTestRun": "20270115T090000Z"}, gpu_test="failed")
    assert run.errors and run.outputs_kept
    assert run.outputs == dev.outputs  # what `pulumi stack output` shows: the last successful update's
    assert "OUTPUTS KEPT" in plan.day2_notes(run)[-1] and "make outputs" in plan.day2_notes(run)[-1]
    # the failed check (an update) keeps its old state: the next `up` runs it again
    again = run_program("dev", {"gpu-k8s:gpuTestRun": "20270115T090000Z"}, mocks=world(T0 + 2 * HOUR), previous=run)
    assert changes(again)["gpu-k8s-smoke-gpu-test-result"][0] == UPDATE


# --- the CLI: --diff against a saved plan, exit codes --------------------------------------


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = plan.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("stack", ["dev", "p4", "mixed", "ack"])
def test_cli_refuses_a_region_change_on_every_shipped_stack(capsys, tmp_path, stack):
    code, saved, err = cli(capsys, "--stack", stack, "--json", "--assume", "now=2027-01-15T08:00:00Z")
    assert code == 0, err
    (tmp_path / "before.json").write_text(saved)
    code, out, _ = cli(
        capsys, "--stack", stack, "--diff", str(tmp_path / "before.json"), "--json", "--config", "alicloud:region=cn-beijing"
    )
    doc = json.loads(out)
    assert code == 3
    [error] = doc["errors"]
    assert error.count("\n") == 0 and "refused: alicloud:region changed from cn-hangzhou to cn-beijing" in error
    assert {c["op"] for c in doc["changes"] if not c["urn"].endswith(f"::{GUARD}")} == {SAME}
    assert any("OUTPUTS KEPT" in n for n in doc["notes"])


def test_a_first_deploy_is_never_refused(capsys):
    """The guard compares with a previous run only: any valid config deploys the first time."""
    code, out, err = cli(
        capsys, "--stack", "dev", "--json", "--config", "kubernetesVersion=1.33.5", "--config", "podCidr=10.250.0.0/16"
    )
    assert code == 0, err
    assert not json.loads(out)["errors"]


# --- the guard's script alone ------------------------------------------------------------


def guard(facts: str, previous: str | None = None):
    import os
    import subprocess

    from components.lifecycle import SCRIPT
    from tools.harness import ROOT

    env = {"PATH": os.environ["PATH"], "FACTS": facts}
    if previous is not None:
        env["PULUMI_COMMAND_STDOUT"] = previous
    return subprocess.run(
        ["bash", str(ROOT / "components" / "scripts" / SCRIPT)], env=env, capture_output=True, text=True, check=False
    )


def test_guard_script_records_compares_and_refuses():
    facts = "alicloud:region=cn-hangzhou gpu-k8s:cluster=kubeadm control-plane=gpu-0"
    created = guard(facts)
    assert created.returncode == 0
    assert created.stdout == "alicloud:region=cn-hangzhou\ncontrol-plane=gpu-0\ngpu-k8s:cluster=kubeadm\n"
    recorded = created.stdout.removesuffix("\n")  # pulumi-command trims one newline
    assert guard(facts, recorded).stdout == created.stdout  # the same stack: accepted
    # a fact the previous run did not record (added by a newer gpu-k8s) is accepted
    assert guard(facts + " gpu-k8s:podCidr=10.244.0.0/16", recorded).returncode == 0
    moved = guard("alicloud:region=cn-beijing gpu-k8s:cluster=kubeadm control-plane=train-0", recorded)
    assert moved.returncode == 1 and moved.stdout == ""
    lines = moved.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused: ") for line in lines)
    assert "alicloud:region changed from cn-hangzhou to cn-beijing" in lines[0] and "make up in cn-beijing" in lines[0]
    assert "control-plane changed from gpu-0 to train-0" in lines[1] and "keep gpu-0 first" in lines[1]


@pytest.mark.parametrize("facts", ["", "region", "a=b c", "=x", "a b=c"])
def test_guard_script_refuses_malformed_facts(facts):
    result = guard(facts)
    assert result.returncode == 1 and "[gpu-k8s lifecycle-guard] ERROR: FACTS" in result.stderr
