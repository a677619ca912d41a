"""The offline plan CLI: text, JSON, dependencies, --out, and exit 2 on bad config."""

import json
import re
import subprocess
import sys

import pytest

from tools import plan
from tools.harness import ROOT


def run_cli(capsys, *argv):
    code = plan.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_text_plan_shows_tree_outputs_and_placeholder_legend(capsys):
    code, out, err = run_cli(capsys, "--stack", "dev")
    assert code == 0, err
    assert "+ gpu-k8s:network:Network  gpu-k8s" in out
    assert "    + alicloud:ecs/instance:Instance  gpu-0-instance" in out
    assert "instanceType=ecs.sgn7i-vws-m2s.xlarge" in out
    assert "sshPrivateKey: [secret]" in out
    assert "Placeholders (values the cloud decides at deploy time):" in out
    assert re.search(r"203\.0\.113\.\d+  = public IP of gpu-0-instance", out)
    assert "<zone>  = availability zone" in out


def test_json_plan_has_resources_dependencies_and_redacted_secrets(capsys):
    code, out, _ = run_cli(capsys, "--stack", "dev", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["stack"] == "dev"
    by_name = {r["name"]: r for r in doc["resources"]}
    for r in doc["resources"]:
        assert set(r) == {"urn", "type", "name", "parent", "provider", "dependencies", "propertyDependencies",
                          "inputs", "id", "options", "outputs"}  # fmt: skip
    # implicit dependency from an Output input: the vSwitch uses the VPC's id
    assert by_name["gpu-k8s-vpc"]["urn"] in by_name["gpu-k8s-vswitch"]["dependencies"]
    assert by_name["gpu-k8s-sg"]["urn"] in by_name["gpu-0-instance"]["dependencies"]
    assert doc["outputs"]["sshPrivateKey"] == "[secret]"
    assert "PLACEHOLDER" not in json.dumps(doc["outputs"])  # no secret text leaks into outputs
    # nor into the saved state (inputs, resource outputs): secrets are digests there
    text = json.dumps(doc)
    assert "PRIVATE KEY" not in text and "certificate-authority" not in text
    assert by_name["gpu-k8s-kubeconfig"]["outputs"]["stdout"].startswith("[secret ")


def test_config_override_changes_the_plan(capsys):
    code, out, _ = run_cli(
        capsys, "--stack", "dev", "--json", "--config", "gpu-k8s:instanceType=ecs.gn6i-c4g1.xlarge", "--config", "nodeCount=2"
    )
    assert code == 0
    types = [r["inputs"]["instanceType"] for r in json.loads(out)["resources"] if r["type"] == "alicloud:ecs/instance:Instance"]
    assert types == ["ecs.gn6i-c4g1.xlarge"] * 2


def test_out_dir_has_plan_json(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--stack", "p4", "--out", str(tmp_path))
    assert code == 0
    assert json.loads((tmp_path / "plan.json").read_text())["stack"] == "p4"
    assert "wrote" in err


# Each bad input: exit 2, one line on stderr naming key, value and what is accepted.
BAD_INPUTS = [
    (["ttlHours=0.25"], "gpu-k8s:ttlHours: '0.25'"),
    (["ttlHours=30000"], "gpu-k8s:ttlHours: '30000'"),
    (["nodeCount=-1"], "gpu-k8s:nodeCount: '-1'"),
    # The Pulumi CLI's own type check comes first (Pulumi.yaml `type: integer`).
    (["nodeCount=two"], "Stack 'dev' with configuration key 'nodeCount' must be of type 'integer'"),
    ([("path", "allowedCidrs[0]=10.0.0.300/32")], "gpu-k8s:allowedCidrs: '10.0.0.300/32'"),
    (["alicloud:region=hangzhou"], "alicloud:region: 'hangzhou'"),
    (["spotPriceLimit=0.5"], "gpu-k8s:spotPriceLimit: '0.5'"),
    (["spot=true", "spotPriceLimit=0.12345"], "gpu-k8s:spotPriceLimit: '0.12345'"),
    (["spot=yes"], "Stack 'dev' with configuration key 'spot' must be of type 'boolean'"),
    (["instanceType=ecs.g7.large"], "gpu-k8s:instanceType: 'ecs.g7.large'"),
    (["driverVersion=latest"], "gpu-k8s:driverVersion: 'latest'"),
    (["kubernetesVersion=1.34"], "gpu-k8s:kubernetesVersion: '1.34'"),
    (["smokeTest=pytorch"], "gpu-k8s:smokeTest: 'pytorch'"),
    (['nodePools=[{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": 1}]'], "gpu-k8s:nodePools"),
    (["controlPlaneInstanceType=ecs.gn6i-c4g1.xlarge"], "gpu-k8s:controlPlaneInstanceType: 'ecs.gn6i-c4g1.xlarge'"),
    (["migStrategy=mixed", "timeSlicingReplicas=2"], "gpu-k8s:timeSlicingReplicas: '2'"),
    # The seed's failure, caught before anything is paid for: CUDA 12.3 image on GRID 470.
    (["smokeTestImage=tensorflow/tensorflow:latest-gpu"], "gpu-k8s:smokeTestImage: 'tensorflow/tensorflow:latest-gpu'"),
    (["smokeTestImage=example.com/my/cuda-app:1.0"], "gpu-k8s:smokeTestImage: 'example.com/my/cuda-app:1.0'"),
    # A typo would otherwise be ignored silently (Pulumi does not check project keys).
    (["instanceTyp=ecs.gn5i-c2g1.large"], "gpu-k8s:instanceTyp is not a gpu-k8s config key"),
]


# Values that used to slip past config into a component and end in a traceback.
P4_BAD_INPUTS = [
    (["driverVersion=390.87.01"], "gpu-k8s:driverVersion: '390.87.01'"),
    (["smokeTest=none", "driverVersion=390.87.01"], "gpu-k8s:driverVersion: '390.87.01'"),
    (["devicePluginVersion=v0.10.0"], "gpu-k8s:devicePluginVersion: 'v0.10.0'"),
    (["smokeTestImage=UPPER CASE", "smokeTestCudaVersion=11.0"], "gpu-k8s:smokeTestImage: 'UPPER CASE'"),
]


@pytest.mark.parametrize(
    "stack,overrides,start", [("dev", *case) for case in BAD_INPUTS] + [("p4", *case) for case in P4_BAD_INPUTS]
)
def test_bad_input_exits_2_with_one_line(capsys, stack, overrides, start):
    argv = ["--stack", stack]
    for o in overrides:
        argv += ["--config-path", o[1]] if isinstance(o, tuple) else ["--config", o]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert lines[0].startswith("gpu-k8s plan: config error: " + start), lines[0]
    assert "expected" in lines[0].lower()
    # One message: a head line, then indented why/fix lines; none longer than ~200 characters.
    assert all(line.startswith("  ") for line in lines[1:]), err
    assert max(len(line) for line in lines) <= 200, err
    assert "Traceback" not in err


def test_cuda_refusal_names_image_cuda_driver_and_fix(capsys):
    _, _, err = run_cli(capsys, "--stack", "dev", "--config", "smokeTestImage=tensorflow/tensorflow:latest-gpu")
    for fact in ("CUDA 12.3", "470.256.03", "11.4", "Fix:"):
        assert fact in err, fact
    _, _, err = run_cli(capsys, "--stack", "dev", "--config", "smokeTestImage=example.com/my/cuda-app:1.0")
    assert "gpu-k8s:smokeTestCudaVersion" in err
    # A vectoradd image with a declared, fitting CUDA version is accepted (a non-vectoradd
    # name is refused for the vectoradd test: see tests/config/test_bad_input.py).
    code, _, _ = run_cli(
        capsys,
        "--stack",
        "p4",
        "--config",
        "smokeTestImage=example.com/my/vectoradd-app:1.0",
        "--config",
        "smokeTestCudaVersion=12.2",
    )
    assert code == 0


def test_unknown_stack_exits_2(capsys):
    code, _, err = run_cli(capsys, "--stack", "nope")
    assert code == 2 and "stacks: ack, dev, mixed, p4" in err


def test_real_process_exit_code_and_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", "dev", "--config", "ttlHours=0.1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_out_dir_has_every_nodes_scripts_and_valid_manifests(capsys, tmp_path):
    from tools.manifests import validate_manifests

    code, _, _ = run_cli(capsys, "--stack", "mixed", "--out", str(tmp_path))
    assert code == 0
    scripts = {p.name for p in (tmp_path / "scripts").iterdir()}
    for node in ("train-0", "train-1", "infer-0", "infer-3"):
        for step in ("wait-boot", "driver-prepare", "nvidia-driver", "gpu-verify", "container-runtime", "kube-packages"):
            assert f"{node}-bootstrap-{step}.sh" in scripts
    assert "infer-0-kubeadm-join.sh" in scripts and "train-0-kubeadm-join.sh" not in scripts
    join = (tmp_path / "scripts" / "infer-0-kubeadm-join.sh").read_text()
    assert join.startswith("#!/usr/bin/env bash\n# resource: infer-0-kubeadm-join\n# runs on the node as: ")
    assert "NODE_NAME=infer-0" in join and "# stdin: [secret]" in join
    assert "xxxxxx." not in join  # the join token is never written out
    assert "# --- begin lib/common.sh (inlined) ---" in join
    assert not [line for line in join.splitlines() if line.startswith("source ")]
    grid = (tmp_path / "scripts" / "infer-0-bootstrap-nvidia-driver.sh").read_text()
    assert "GPU_DRIVER=grid" in grid.splitlines()[2]
    manifests = {str(p.relative_to(tmp_path)): p.read_text() for p in (tmp_path / "manifests").iterdir()}
    kinds = " ".join(manifests)
    for kind in ("daemonset", "configmap", "pod", "namespace", "clusterrole"):
        assert kind in kinds
    assert validate_manifests(manifests, "1.34.2") == []


def test_urns_lists_what_make_retest_replaces(capsys):
    import subprocess

    recipe = subprocess.run(
        ["make", "-s", "-n", "-C", str(ROOT), "retest", "STACK=mixed"], capture_output=True, text=True, check=True
    )
    pattern = re.search(r"--urns='([^']+)'", recipe.stdout).group(1)
    code, out, _ = run_cli(capsys, "--stack", "mixed", f"--urns={pattern}")
    assert code == 0
    urns = out.split()
    run = plan.plan("mixed", [])
    expected = [r.urn for r in run.of_type("kubernetes:core/v1:Pod")] + [run.named("gpu-k8s-smoke-gpu-test-result").urn]
    assert sorted(urns) == sorted(expected) and len(urns) == 7


def test_urns_with_a_bad_regex_exits_2(capsys):
    code, out, err = run_cli(capsys, "--stack", "dev", "--urns=(")
    assert code == 2 and out == "" and "not a regular expression" in err


def test_broken_stack_file_exits_2_without_traceback(capsys, tmp_path, monkeypatch):
    from tools import harness

    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "stacks" / "Pulumi.broken.yaml").write_text("config:\n  gpu-k8s:instanceType: [unclosed\n")
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    code, out, err = run_cli(capsys, "--stack", "broken")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "not valid YAML" in err


def test_a_zone_refused_offline_names_the_assumed_zone_list(capsys):
    argv = ["--stack", "dev", "--config", "zoneId=cn-hangzhou-h", "--assume", "zones=cn-hangzhou-i,cn-hangzhou-j"]
    assert plan.main(argv) == 2
    err = capsys.readouterr().err
    assert "gpu-k8s:zoneId: 'cn-hangzhou-h' is not accepted" in err and "--assume zones=cn-hangzhou-i,cn-hangzhou-j" in err
    assert plan.main(argv[:4]) == 0  # no zone list assumed: planned as pinned, labelled "checked at deploy time"
    assert "cn-hangzhou-h  = gpu-k8s:zoneId as pinned: whether it sells every type is checked at deploy time" in (
        capsys.readouterr().out
    )
