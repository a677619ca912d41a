"""Day 2: what a second `pulumi up` does, on the offline engine model (tools/engine.py).

Each scenario runs the real program twice: the first run is the state a `pulumi up`
left, the second meets changed facts (--assume) or config and is diffed against it,
as the engine would. Expected diffs are written out.
"""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime, timedelta

import helpers
import pytest
from helpers import HOUR, IMAGE, T0, changes

from tools import plan
from tools.engine import CREATE, REPLACE, SAME, UPDATE, diff_states
from tools.harness import ROOT, ProgramRun, run_program, states
from tools.mocks import PlaceholderMocks

ZONES = ["cn-hangzhou-h", "cn-hangzhou-i"]
INSTANCE = "alicloud:ecs/instance:Instance"


def world(at: float = T0, **facts) -> PlaceholderMocks:
    """Two zones here: a scenario sells out the first."""
    return helpers.world(at, **{"zones": ZONES, **facts})


def when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program("dev", mocks=world())


@pytest.fixture(scope="module")
def mixed() -> ProgramRun:
    return run_program("mixed", mocks=world())


def make_replace_urns(target: str, stack: str, *make_vars: str) -> list[str]:
    """The URNs a make target passes to `pulumi up --replace` (literal, or via --urns)."""
    recipe = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), target, f"STACK={stack}", *make_vars],
        capture_output=True,
        text=True,
        check=True,
    )
    urns = re.findall(r"--replace[= ]'?(urn:[^' \n]+)", recipe.stdout)
    # replace-node first looks up the node's join (is it a worker?): that one is not replaced
    for pattern in re.findall(r"urns=\$\(\S+ -m tools.plan [^)]*--urns='([^']+)'", recipe.stdout) or re.findall(
        r"--urns='([^']+)'", recipe.stdout
    ):
        urns += [r.urn for r in plan.plan(stack, []).resources if re.search(pattern, r.name)]
    assert urns, recipe.stdout
    return urns


# --- scenarios that hold on today's components ------------------------------------------


def test_same_config_changes_nothing(mixed):
    again = run_program("mixed", mocks=world(T0 + 5 * HOUR), previous=mixed)
    assert changes(again) == {}
    assert {c.op for c in again.changes} == {SAME} and len(again.changes) == len(mixed.resources)
    # ids are the engine's: stable for every resource that stays
    assert {r.urn: r.id for r in again.resources} == {r.urn: r.id for r in mixed.resources}


def test_ttl_change_replaces_the_anchor_and_moves_every_release_time(mixed):
    later = T0 + HOUR
    run = run_program("mixed", {"gpu-k8s:ttlHours": "6"}, mocks=world(later), previous=mixed)
    diff = changes(run)
    anchors = {n for n, (op, keys) in diff.items() if op == REPLACE and keys == ("triggers",)}
    assert anchors and all("anchor" in n for n in anchors)
    instances = {r.name for r in run.of_type(INSTANCE)}
    assert {n: v for n, v in diff.items() if n not in anchors} == dict.fromkeys(instances, (UPDATE, ("autoReleaseTime",)))
    for r in run.of_type(INSTANCE):  # now + 6 h, counted from this `up`
        assert when(r.inputs["autoReleaseTime"]) - at(later) >= timedelta(hours=6)
    # the pure diff of the two states says the same as the run that played the engine
    assert {c.urn: (c.op, c.keys) for c in diff_states(states(mixed), states(run))} == {
        c.urn: (c.op, c.keys) for c in run.changes
    }


def test_make_extend_replaces_the_anchors_and_moves_every_node(mixed):
    later = T0 + 3 * HOUR
    run = run_program("mixed", mocks=world(later), previous=mixed, replace=make_replace_urns("extend", "mixed"))
    diff = changes(run)
    replaced = {n for n, (op, _) in diff.items() if op == REPLACE}
    assert replaced and all("anchor" in n for n in replaced)
    for r in run.of_type(INSTANCE):
        assert diff[r.name] == (UPDATE, ("autoReleaseTime",))
        assert when(r.inputs["autoReleaseTime"]) - at(later) >= timedelta(hours=4)
    assert set(diff) == replaced | {r.name for r in run.of_type(INSTANCE)}


def test_kubernetes_version_bump_under_running_nodes_is_refused_before_anything_moves(mixed):
    # kubeadm here does not upgrade a running cluster (40/50 skip an initialised or joined
    # node, 30-kube-packages refuses the skew on a joined one): the lifecycle guard refuses
    # it first, and everything else waits for the guard (components/lifecycle.py).
    run = run_program("mixed", {"gpu-k8s:kubernetesVersion": "1.34.3"}, mocks=world(T0 + HOUR), previous=mixed)
    assert changes(run) == {"gpu-k8s-lifecycle-guard": (UPDATE, ("create",))}
    [error] = run.errors
    assert error.startswith("gpu-k8s-lifecycle-guard: refused: gpu-k8s:kubernetesVersion changed from 1.34.2 to 1.34.3")
    assert "make down, then make up" in error
    assert len(run.changes) == len(mixed.resources)  # nothing deleted, nothing created


def test_smoke_test_change_then_make_retest(dev):
    cfg = {"gpu-k8s:smokeTest": "tensorflow", "gpu-k8s:smokeTestImage": "tensorflow/tensorflow:2.6.0-gpu"}
    second = run_program("dev", cfg, mocks=world(T0 + HOUR), previous=dev)
    assert changes(second) == {
        "gpu-k8s-smoke-script": (CREATE, ()),  # the seed's test script (ConfigMap)
        # a new spec is a new pod name (its hash): never blocked by the old pod still terminating
        "gpu-k8s-smoke-pod-gpu-0": (REPLACE, ("metadata.name", "spec.containers", "spec.volumes")),
        "gpu-k8s-smoke-gpu-test-result": (UPDATE, ("create",)),  # TEST_PODS changed: runs the check again
        "gpu-0-bootstrap-prefetch-images": (REPLACE, ("triggers",)),  # pulls the new image ahead
    }
    old_name = dev.named("gpu-k8s-smoke-pod-gpu-0").inputs["metadata"]["name"]
    new_name = second.named("gpu-k8s-smoke-pod-gpu-0").inputs["metadata"]["name"]
    assert old_name != new_name and old_name.rsplit("-", 1)[0] == new_name.rsplit("-", 1)[0] == "gpu-test-gpu-0"
    pod = next(c for c in second.changes if c.name == "gpu-k8s-smoke-pod-gpu-0")
    assert "delete_before_replace" in pod.note  # the old pod (it may hold the GPU) goes first
    # make retest (same config): it sets gpu-k8s:gpuTestRun, then a plain `up`.
    recipe = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "retest", "STACK=dev"], capture_output=True, text=True, check=True
    ).stdout
    assert "pulumi config set -s dev gpu-k8s:gpuTestRun" in recipe and "--replace" not in recipe
    third = run_program("dev", {**cfg, "gpu-k8s:gpuTestRun": "20261129T050000Z"}, mocks=world(T0 + 2 * HOUR), previous=second)
    # Only the test pods and the result check, anew: the pod under a new name (no wait for the
    # old one, still terminating, to free its name), and the check re-runs for it.
    assert changes(third) == {
        "gpu-k8s-smoke-pod-gpu-0": (REPLACE, ("metadata.name",)),
        "gpu-k8s-smoke-gpu-test-result": (UPDATE, ("create",)),
    }
    third_name = third.named("gpu-k8s-smoke-pod-gpu-0").inputs["metadata"]["name"]
    assert third_name not in (old_name, new_name) and third_name.startswith("gpu-test-gpu-0-")
    # The same run value again changes nothing.
    again = run_program("dev", {**cfg, "gpu-k8s:gpuTestRun": "20261129T050000Z"}, mocks=world(T0 + 3 * HOUR), previous=third)
    assert changes(again) == {}


def test_scale_out_later_touches_only_the_new_node_and_the_cluster_wide_checks(dev):
    run = run_program("dev", {"gpu-k8s:nodeCount": 2}, mocks=world(T0 + 4 * HOUR), previous=dev)
    diff = changes(run)
    # the allocatable check runs again for the new node (what it verifies changed), nothing else is replaced
    assert [n for n, (op, _) in diff.items() if op == REPLACE] == ["gpu-k8s-smoke-gpu-allocatable"]
    updated = {n for n, (op, _) in diff.items() if op == UPDATE}
    assert updated == {"gpu-k8s-prune-nodes", "gpu-k8s-smoke-gpu-test-result"}
    created = {n for n, (op, _) in diff.items() if op == CREATE}
    assert {"gpu-1-instance", "gpu-1-bootstrap-nvidia-driver", "gpu-1-kubeadm-join", "gpu-k8s-smoke-pod-gpu-1"} <= created
    assert not [n for n in created if n.startswith("gpu-0")]


def test_a_failed_gpu_test_fails_up_and_runs_again_next_time(dev):
    failing = run_program("dev", mocks=world(gpu_test="failed"))
    [error] = failing.errors
    # the diagnosis is the real 80-gpu-test-result.sh's, over the seed's recorded failure
    assert error.startswith("gpu-k8s-smoke-gpu-test-result: GPU test FAILED")
    assert "the image needs a newer driver (unsatisfied condition: cuda>=12.3)" in error
    # The check's create failed, so gpuTest is rejected, and with it the SDK's one
    # RegisterResourceOutputs call: no stack output is recorded, not even the kubeconfig
    # (make kubeconfig / ssh-key then read the state: tools/stack_secret.py).
    assert failing.outputs and all(str(v).startswith("<not recorded: ") for v in failing.outputs.values())
    # A failed step is not recorded: the next `up` runs the check again.
    again = run_program("dev", mocks=world(T0 + HOUR, gpu_test="failed"), previous=failing)
    assert changes(again) == {"gpu-k8s-smoke-gpu-test-result": (CREATE, ())}
    assert len(again.errors) == 1
    # Once recorded as passed, an unchanged check does not run again (nothing to fail).
    assert changes(run_program("dev", mocks=world(T0 + HOUR, gpu_test="failed"), previous=dev)) == {}


def test_a_gpu_test_timeout_is_diagnosed_by_the_script():
    run = run_program("dev", mocks=world(gpu_test="timeout"))
    [error] = run.errors
    assert "still Pending after 900s" in error and "Insufficient nvidia.com/gpu" in error


def test_a_passing_gpu_test_stays_a_labelled_placeholder(dev):
    [pod] = dev.outputs["gpuTest"]["pods"]
    assert pod["log"].startswith("<placeholder: log of default/gpu-test-gpu-0")
    assert pod["log"] in dev.placeholders and not dev.errors


def test_nvidia_smi_answer_comes_from_a_recorded_fixture_where_one_exists():
    run = run_program("p4", mocks=world())
    stdout = run.named("gpu-0-bootstrap-gpu-verify").outputs["stdout"]
    assert stdout == "Tesla P4, 535.129.03, 7680 MiB\n"  # parsed from the seed's nvidia-smi table
    assert "tests/fixtures/nvidia-smi/tesla-p4-driver-535" in run.placeholders[stdout.strip()]


# --- scenarios that need branch issue-9's component fixes ----------------------------------


def test_newer_image_changes_nothing(dev):
    run = run_program("dev", mocks=world(T0 + 24 * HOUR, image="m-bp1ubuntu2204b"), previous=dev)
    # only the node's image record runs its update, which prints the image it already has
    assert changes(run) == {"gpu-0-image": (UPDATE, ("create",))}
    assert run.named("gpu-0-image").outputs["stdout"] == IMAGE
    assert run.named("gpu-0-instance").inputs["imageId"] == IMAGE


def test_replace_node_moves_the_node_to_the_current_image(mixed):
    newer = "m-bp1ubuntu2204b"
    urns = make_replace_urns("replace-node", "mixed", "NODE=infer-1")
    assert sorted(u.rsplit("::", 1)[-1] for u in urns) == ["infer-1-image", "infer-1-instance", "infer-1-ttl-anchor"]
    run = run_program("mixed", mocks=world(T0 + 3 * HOUR, image=newer), previous=mixed, replace=urns)
    diff = changes(run)
    assert diff["infer-1-instance"] == diff["infer-1-image"] == (REPLACE, ("--replace",))
    assert run.named("infer-1-instance").inputs["imageId"] == newer  # not the old image from state
    # the other nodes keep theirs
    assert run.named("infer-2-instance").inputs["imageId"] == IMAGE
    assert diff.get("infer-2-instance", (SAME,))[0] == SAME


def test_a_newer_image_then_replace_node_still_gets_the_current_image(mixed):
    # after an up with a newer image (the record updated, its stdout kept), replace-node works
    newer = "m-bp1ubuntu2204b"
    second = run_program("mixed", mocks=world(T0 + HOUR, image=newer), previous=mixed)
    assert second.named("infer-1-instance").inputs["imageId"] == IMAGE
    urns = make_replace_urns("replace-node", "mixed", "NODE=infer-1")
    third = run_program("mixed", mocks=world(T0 + 2 * HOUR, image=newer), previous=second, replace=urns)
    assert third.named("infer-1-instance").inputs["imageId"] == newer


def test_first_zone_sold_out_changes_nothing(mixed):
    run = run_program("mixed", mocks=world(T0 + HOUR, zones=["cn-hangzhou-i"]), previous=mixed)
    assert changes(run) == {}


def test_node_added_4h_later_gets_a_valid_release_time(dev):
    now = T0 + 4 * HOUR
    run = run_program("dev", {"gpu-k8s:nodeCount": 2}, mocks=world(now), previous=dev)
    created = [r for r in run.of_type(INSTANCE) if changes(run).get(r.name, ("",))[0] == CREATE]
    assert created
    for r in created:  # ECS refuses a release time less than 30 minutes ahead
        assert when(r.inputs["autoReleaseTime"]) - at(now) > timedelta(minutes=30)
    assert changes(run).get("gpu-0-instance") is None  # the running node keeps its time


def test_a_replaced_worker_rejoins_with_a_fresh_token(mixed):
    worker = mixed.named("infer-1-instance").urn
    run = run_program("mixed", mocks=world(T0 + 3 * HOUR), previous=mixed, replace=[worker])
    diff = changes(run)
    assert diff["infer-1-instance"] == (REPLACE, ("--replace",))
    # the new machine is set up from scratch: every step and its copy anew (a new instance id)
    for step in ("wait-boot", "driver-prepare", "nvidia-driver", "gpu-verify", "container-runtime", "kube-packages"):
        assert diff[f"infer-1-bootstrap-{step}"] == diff[f"infer-1-bootstrap-{step}-copy"] == (REPLACE, ("triggers",))
    assert diff["infer-1-kubeadm-join"][0] in (UPDATE, REPLACE)
    join = run.named("infer-1-kubeadm-join")
    tokens = [r for r in run.resources if "join-token" in r.name and r.type == "command:remote:Command"]
    # the token this join uses is made anew in the same `up` (the first one expired after 2 h)
    assert any(r.urn in join.dependencies and diff.get(r.name, (SAME,))[0] != SAME for r in tokens)


# --- the CLI: --diff against a saved plan, --assume ----------------------------------------


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = plan.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_diff_against_a_saved_plan(capsys, tmp_path):
    before = tmp_path / "before.json"
    code, saved, err = cli(
        capsys, "--stack", "dev", "--json", "--assume", f"image={IMAGE}", "--assume", "now=2027-01-15T08:00:00Z"
    )
    assert code == 0, err
    before.write_text(saved)
    code, out, _ = cli(capsys, "--stack", "dev", "--diff", str(before), "--json", "--assume", f"image={IMAGE}")
    doc = json.loads(out)
    assert code == 0 and {c["op"] for c in doc["changes"]} == {"same"}
    assert len({c["urn"] for c in doc["changes"]}) == len(doc["changes"]) == len(json.loads(saved)["resources"])
    code, out, err = cli(
        capsys, "--stack", "dev", "--diff", str(before), "--assume", "image=m-bp1ubuntu2204b", "--config", "ttlHours=6"
    )
    assert code == 0, err
    # the newer image is ignored on the running node (ignore_changes): no ReplaceSystemDisk
    assert re.search(r"~ update +alicloud:ecs/instance:Instance +gpu-0-instance +\[autoReleaseTime\]\n", out)
    assert "DESTRUCTIVE" not in out
    assert "+- replace  command:local:Command  gpu-0-ttl-anchor  [triggers]" in out


def test_cli_failed_gpu_test_exits_3_with_the_diagnosis(capsys, tmp_path):
    code, out, _ = cli(capsys, "--stack", "dev", "--assume", "gpu-test=failed")
    assert code == 3
    assert "`pulumi up` would FAIL" in out and "unsatisfied condition: cuda>=12.3" in out
    # saved as JSON, the failed step is marked and left out of the state the next diff plays against
    code, saved, _ = cli(capsys, "--stack", "dev", "--json", "--assume", "gpu-test=failed")
    doc = json.loads(saved)
    assert code == 3 and "cuda>=12.3" in doc["errors"][0]
    assert [r["name"] for r in doc["resources"] if r.get("failed")] == ["gpu-k8s-smoke-gpu-test-result"]
    (tmp_path / "failed.json").write_text(saved)
    code, out, _ = cli(capsys, "--stack", "dev", "--json", "--diff", str(tmp_path / "failed.json"))
    ops = {c["urn"].rsplit("::", 1)[-1]: c["op"] for c in json.loads(out)["changes"] if c["op"] != "same"}
    assert code == 0 and ops == {"gpu-k8s-smoke-gpu-test-result": "create"}


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--assume", "gpu-test=maybe"], "gpu-test=passed|failed|timeout"),
        (["--assume", "now=tomorrow"], "expected an ISO 8601 UTC time"),
        (["--assume", "now=9999-12-31T23:59:59Z"], "from 1970 to 9000"),  # past what a timestamp holds
        (["--config", 'allowedCidrs=["203.0.113.7/32"]'], "Stack 'dev' with configuration key 'allowedCidrs' must be of type"),
        (["--diff", "/nonexistent.json"], "not a plan saved with --json"),
        (["--replace", "urn:pulumi:dev::gpu-k8s::x"], "--replace needs --diff"),
    ],
)
def test_cli_bad_diff_input_is_one_line_exit_2(capsys, argv, message):
    code = plan.main(["--stack", "dev", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and message in err


def test_an_updated_instance_keeps_its_addresses(mixed):
    # replaced once (new addresses), then updated in place: the addresses stay
    worker = mixed.named("infer-1-instance")
    second = run_program("mixed", mocks=world(T0 + HOUR), previous=mixed, replace=[worker.urn])
    ip = second.named("infer-1-instance").outputs["publicIp"]
    assert ip != worker.outputs["publicIp"]
    third = run_program("mixed", {"gpu-k8s:ttlHours": "6"}, mocks=world(T0 + 2 * HOUR), previous=second)
    assert changes(third)["infer-1-instance"] == (UPDATE, ("autoReleaseTime",))
    assert third.named("infer-1-instance").outputs["publicIp"] == ip
    assert third.named("infer-1-instance").id == second.named("infer-1-instance").id == "<infer-1-instance id #2>"


def test_a_replaced_step_replaces_the_steps_after_it_and_an_updated_one_does_not(dev):
    # Steps chain on the ids of the steps they follow (triggers): a replace gives a new
    # id and the steps after it are replaced too; an update keeps the id (reference §2).
    boot = dev.named("gpu-0-bootstrap-wait-boot").urn
    diff = changes(run_program("dev", mocks=world(T0 + HOUR), previous=dev, replace=[boot]))
    assert diff["gpu-0-bootstrap-wait-boot"] == (REPLACE, ("--replace",))
    for step in ("driver-prepare", "nvidia-driver", "gpu-verify", "container-runtime", "kube-packages"):
        assert diff[f"gpu-0-bootstrap-{step}"] == (REPLACE, ("triggers",)), step
    assert diff["gpu-k8s-kubeadm-init"] == (REPLACE, ("triggers",))
    mirrors = {"gpu-k8s:registryMirrors": {"docker.io": "https://example.mirror.aliyuncs.com"}}
    diff = changes(run_program("dev", mirrors, mocks=world(T0 + HOUR), previous=dev))
    assert diff == {
        "gpu-0-bootstrap-container-runtime": (UPDATE, ("create",)),  # kubeadm init does not re-run
        # the runtime the GPU test verified changed: the checks and the test run again
        "gpu-k8s-smoke-gpu-allocatable": (REPLACE, ("triggers",)),
        "gpu-k8s-smoke-pod-gpu-0": (REPLACE, ("metadata.name",)),
        "gpu-k8s-smoke-gpu-test-result": (UPDATE, ("create",)),
    }


def test_the_repo_copy_of_the_gpu_failure_fixture_matches_the_shared_one():
    shared = ROOT.parent / "shared" / "fixtures" / "gpu-failures" / "messages.json"
    if not shared.exists():
        pytest.skip(f"{shared} is absent (a clone without ../shared): nothing to compare the repo copy with")
    assert json.loads(shared.read_text()) == json.loads((ROOT / "tools" / "fixtures" / "gpu-failures.json").read_text())


def test_scale_in_deletes_the_removed_node_and_prunes_it_first(mixed):
    pools = [
        {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2},
        {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 3},
    ]
    run = run_program("mixed", {"gpu-k8s:nodePools": pools}, mocks=world(T0 + HOUR), previous=mixed)
    diff = changes(run)
    deleted = {n for n, (op, _) in diff.items() if op == "delete"}
    assert "infer-3-instance" in deleted and all(n.startswith(("infer-3", "gpu-k8s-smoke-pod-infer-3")) for n in deleted)
    assert diff["gpu-k8s-prune-nodes"] == (UPDATE, ("create",))  # drains and deletes infer-3 from Kubernetes
    assert len(run.changes) == len({c.urn for c in run.changes}) == len(run.resources) + len(deleted)
