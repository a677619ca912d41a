"""The offline plan claims nothing that has not happened, shows the cost whole, writes a
fresh --out tree, refuses misspelt keys in every namespace, and never prints a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools import plan
from tools.harness import ROOT


def run_cli(capsys, *argv):
    code = plan.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _results(outputs: dict) -> list[object]:
    """Every field that only a deployed stack can know."""
    test = outputs["gpuTest"]
    values = [test["verdict"]]
    for pod in test["pods"]:
        values += [pod["phase"], pod["passed"], pod["diagnosis"]]
    for row in outputs["gpuNodes"]:
        values += [row["gpu"], row["driver"], row["allocatableGpus"], row["test"]]
    return values


def test_json_results_are_labelled_placeholders(capsys):
    code, out, _ = run_cli(capsys, "--stack", "mixed", "--json")
    assert code == 0
    doc = json.loads(out)
    values = _results(doc["outputs"])
    assert values and all(isinstance(v, str) and v.startswith("<placeholder: ") for v in values), values
    assert "PASSED" not in [doc["outputs"]["gpuTest"]["verdict"]] + [r["test"] for r in doc["outputs"]["gpuNodes"]]
    assert plan.PLACEHOLDER_VERDICT in doc["placeholders"]


def test_text_results_are_labelled_placeholders(capsys):
    code, out, _ = run_cli(capsys, "--stack", "p4")
    assert code == 0
    outputs = out.split("\nOutputs:\n", 1)[1].split("\n\n", 1)[0]
    assert '"verdict":"<placeholder: PASSED or FAILED' in outputs
    assert '"test":"PASSED"' not in outputs and '"verdict":"PASSED"' not in outputs
    assert "<placeholder: nvidia-smi's GPU name at deploy time; the catalog expects Tesla P4>" in outputs


def test_out_plan_json_has_the_same_placeholders(capsys, tmp_path):
    code, _, _ = run_cli(capsys, "--stack", "dev", "--out", str(tmp_path / "o"))
    assert code == 0
    doc = json.loads((tmp_path / "o" / "plan.json").read_text())
    assert all(str(v).startswith("<placeholder: ") for v in _results(doc["outputs"]))


def test_skipped_test_is_not_a_placeholder(capsys):
    code, out, _ = run_cli(capsys, "--stack", "dev", "--json", "--config", "smokeTest=none")
    assert code == 0
    assert json.loads(out)["outputs"]["gpuTest"]["verdict"] == "SKIPPED"


def test_cost_is_shown_whole_with_unknown_types_named(capsys):
    unknown = '[{"name": "train", "instanceType": "ecs.gn6v-c8g1.2xlarge", "count": 2}, ' + (
        '{"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4}]'
    )
    code, out, _ = run_cli(capsys, "--stack", "mixed", "--config", "ttlHours=6", "--config", f"nodePools={unknown}")
    assert code == 0
    cost = out.split("    cost (", 1)[1]
    assert "per hour:                 at least 7.33, prices unknown for ecs.gn6v-c8g1.2xlarge" in cost
    assert "most before auto-release: at least 43.99, prices unknown for ecs.gn6v-c8g1.2xlarge (after 6 h)" in cost
    for node in ("train-0", "train-1", "infer-0", "infer-3"):
        assert f"        {node} (" in cost
    priced = ("--config", f"nodePools={unknown}", "--config", "hourlyPriceCny=9")
    code, out, _ = run_cli(capsys, "--stack", "mixed", "--json", *priced)
    doc = json.loads(out)["outputs"]["cost"]
    assert doc["hourlyTotal"] == "25.33" and doc["maxBeforeAutoRelease"] == "101.33"


def test_out_is_a_fresh_tree(capsys, tmp_path):
    """Only what the earlier plan wrote (its file list) is removed: never a file of the user's."""
    out = tmp_path / "plan-out"
    assert run_cli(capsys, "--stack", "mixed", "--out", str(out))[0] == 0
    assert (out / "scripts" / "infer-3-kubeadm-join.sh").exists()
    (out / "scripts" / "my-notes.sh").write_text("mine\n")
    (out / "before.json").write_text("{}\n")  # what `make plan-save` writes there
    for _ in range(2):
        assert run_cli(capsys, "--stack", "dev", "--out", str(out))[0] == 0
        scripts = {p.name for p in (out / "scripts").iterdir()}
        assert "gpu-k8s-kubeadm-init.sh" in scripts and not [s for s in scripts if s.startswith(("infer-", "train-"))]
        assert json.loads((out / "plan.json").read_text())["stack"] == "dev"
        assert not (out / "node-labels" / "17-node-train-0-labels.yaml").exists()
        assert (out / "scripts" / "my-notes.sh").read_text() == "mine\n" and (out / "before.json").read_text() == "{}\n"
    listed = (out / plan.OUT_MANIFEST).read_text().split()
    on_disk = [str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()]
    assert sorted(listed) == sorted(set(on_disk) - {plan.OUT_MANIFEST, "before.json", "scripts/my-notes.sh"})


def test_out_never_writes_over_a_file_it_did_not_write(capsys, tmp_path):
    out = tmp_path / "plan-out"
    assert run_cli(capsys, "--stack", "dev", "--out", str(out))[0] == 0
    mine = out / "scripts" / "gpu-1-kubeadm-join.sh"  # a file the next plan (2 nodes) would write
    mine.write_text("mine\n")
    code, stdout, err = run_cli(capsys, "--stack", "dev", "--config", "nodeCount=2", "--out", str(out))
    assert code == 2 and stdout == "" and err.count("\n") == 1
    assert err.startswith(f"gpu-k8s plan: --out {out}: scripts/gpu-1-kubeadm-join.sh is there and was not written")
    assert mine.read_text() == "mine\n" and (out / "scripts" / "gpu-k8s-kubeadm-init.sh").exists()


def test_out_refuses_a_plan_tree_without_a_file_list(capsys, tmp_path):
    """Written by an older plan: which files are its own is not known, so none is removed."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "plan.json").write_text("{}\n")
    (tmp_path / "scripts" / "gpu-k8s-kubeadm-init.sh").write_text("old\n")
    code, out, err = run_cli(capsys, "--stack", "dev", "--out", str(tmp_path))
    assert code == 2 and out == "" and err.count("\n") == 1 and plan.OUT_MANIFEST in err
    assert (tmp_path / "scripts" / "gpu-k8s-kubeadm-init.sh").read_text() == "old\n"


def test_out_manifests_hold_no_node_objects(capsys, tmp_path):
    import yaml

    assert run_cli(capsys, "--stack", "mixed", "--out", str(tmp_path))[0] == 0
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in (tmp_path / "manifests").iterdir()}
    assert "Node" not in kinds and {"DaemonSet", "Pod"} <= kinds
    labels = sorted(p.name for p in (tmp_path / "node-labels").iterdir())
    assert len(labels) == 6 and all("-node-" in name for name in labels)


@pytest.mark.parametrize("where", ["file", "under-a-file", "foreign-dir"])
def test_out_to_an_unusable_path_is_one_line_exit_2(capsys, tmp_path, where):
    (tmp_path / "f.txt").write_text("mine\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine\n")
    target = {"file": tmp_path / "f.txt", "under-a-file": tmp_path / "f.txt" / "x", "foreign-dir": tmp_path / "d"}[where]
    code, out, err = run_cli(capsys, "--stack", "dev", "--out", str(target))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"gpu-k8s plan: --out {target}: ")
    assert (tmp_path / "f.txt").read_text() == "mine\n" and (tmp_path / "d" / "notes.txt").read_text() == "mine\n"


def test_out_unwritable_in_a_real_process_has_no_traceback(tmp_path):
    (tmp_path / "f.txt").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.plan", "--stack", "dev", "--out", str(tmp_path / "f.txt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "key,hint",
    [
        ("alicloud:regoin", "did you mean alicloud:region?"),
        ("alicloud:acessKey", "did you mean alicloud:accessKey?"),
        ("gpu-k8:instanceType", "did you mean gpu-k8s:instanceType?"),
        ("tls:prxy", "did you mean tls:proxy?"),
    ],
)
def test_misspelt_keys_outside_gpu_k8s_are_refused(capsys, key, hint):
    code, out, err = run_cli(capsys, "--stack", "dev", "--config", f"{key}=x")
    assert code == 2 and out == ""
    assert err.startswith(f"gpu-k8s plan: config error: {key}") and hint in err and len(err.splitlines()) == 1


def test_real_provider_keys_are_accepted(capsys):
    # (alicloud:accessKey, secretKey and securityToken too, as secure: values: tests/tools/test_stack_files.py)
    keys = ["alicloud:profile", "alicloud:accountId", "tls:proxy", "kubernetes:context"]
    argv = [arg for key in keys for arg in ("--config", f"{key}=x")]
    code, _, err = run_cli(capsys, "--stack", "dev", *argv)
    assert code == 0, err


def test_provider_keys_come_from_the_installed_sdk():
    keys = plan.provider_config_keys("alicloud")
    assert {"region", "accessKey", "secretKey", "profile", "securityToken"} <= keys


def test_gitignore_covers_every_file_make_writes():
    import re

    ignored = (ROOT / ".gitignore").read_text().split()
    makefile = (ROOT / "Makefile").read_text()
    written = re.findall(r"^\t.*> ?([\w.-]+)\s*$", makefile, re.M) + re.findall(r"^\t.* --to ([\w.-]+)\s*$", makefile, re.M)
    assert {"kubeconfig", "gpu-k8s.pem"} <= set(written)
    for name in written:
        assert name in ignored or f"/{name}" in ignored, name
    assert "plan-out/" in ignored and ".state/" in ignored


def test_the_text_plan_shows_what_a_bake_costs():
    """nodeImage bake: the builder's hours and the image's storage after `make down`, not only in --json."""
    from tools.plan import render_cost

    baked = {"item": "baked node image (snapshot storage)", "monthly": "at most 7.20", "source": "estimate: x"}
    cost = {
        "hourlyTotal": "8.68",
        "maxBeforeAutoRelease": "34.72",
        "bakedImages": {"tesla": {**baked, "builder": "one more node"}},
    }
    lines = render_cost(cost)
    assert "        tesla baked node image (snapshot storage): at most 7.20 CNY/month  [estimate: x]" in lines
    assert "            builder: one more node" in lines
