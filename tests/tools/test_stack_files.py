"""A malformed stack file is one line and exit 2 from every CLI that reads it, never a
traceback; Aliyun credentials in plain text (stack file or --config) are refused."""

from __future__ import annotations

import pytest

from benchmarks import estimate
from tools import harness, plan, preflight

REGION = "config:\n  alicloud:region: cn-hangzhou\n  gpu-k8s:instanceType: ecs.gn6i-c4g1.xlarge\n"


@pytest.fixture
def stacks(tmp_path, monkeypatch):
    """A project root of its own (the real Pulumi.yaml and program); returns a stack-file writer."""
    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((harness.ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "__main__.py").symlink_to(harness.ROOT / "__main__.py")
    monkeypatch.setattr(harness, "ROOT", tmp_path)

    def write(name: str, text: str | bytes) -> str:
        path = tmp_path / "stacks" / f"Pulumi.{name}.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return name

    return write


MALFORMED = [
    ("- a\n- b\n", "the top level is a list; expected a mapping with a config: mapping"),
    ("hello\n", "the top level is the text 'hello'; expected a mapping"),
    ("", "empty; expected a mapping with a config: mapping"),
    ("# nothing but a comment\n", "empty; expected"),
    ("config:\n  - gpu-k8s:nodeCount\n", "config: is a list; expected a mapping of namespace:key values"),
    ("config: 3\n", "config: is the number 3; expected a mapping"),
    ("config:\n  1: x\n", "the config key 1 is a number, not text; expected namespace:name text"),
    ("config:\n  null: x\n", "the config key null is null, not text; expected"),
    ("config: [\n", "not valid YAML at line 2, column 1 ("),
    ("config:\n  a:b: 1\n  a:b: 2\n", "not valid YAML at line 3, column 3 (mapping key 'a:b' already defined at line 2)"),
    ("config: &a\n  gpu-k8s:x: *a\n", "an anchor's value contains itself"),
    ("config:\n  gpu-k8s:gridDriverUrl:\n    secure: 5\n", "gridDriverUrl: secure: holds the number 5; expected the ciphertext"),
    ("config:\n  gpu-k8s:gridDriverUrl:\n    secure: {a: b}\n", "gpu-k8s:gridDriverUrl: secure: holds a mapping; expected"),
    (REGION + "  gpu-k8s:gpuTestRun: !!binary aGVsbG8=\n", "gpu-k8s:gpuTestRun is a !!binary value; expected text"),
    (b"\xff\xfeconfig: {}\n", "not UTF-8 text; expected a UTF-8 YAML file"),
]


@pytest.mark.parametrize("text,message", MALFORMED, ids=range(len(MALFORMED)))
def test_a_malformed_stack_file_is_one_line_exit_2(capsys, stacks, text, message):
    stack = stacks("broken", text)
    code = plan.main(["--stack", stack])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"gpu-k8s plan: stacks/Pulumi.{stack}.yaml: "), err
    assert message in err and "; expected " in err and err.count("\n") == 1, err


def test_preflight_and_estimate_say_the_same_line(capsys, stacks):
    stack = stacks("listed", "- a\n")
    line = "stacks/Pulumi.listed.yaml: the top level is a list; expected a mapping"
    assert preflight.main(["--stack", stack], env={"ALICLOUD_ACCESS_KEY": "a", "ALICLOUD_SECRET_KEY": "b"}) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"preflight: {line}") and err.count("\n") == 1, err
    assert estimate.main(["--stack", stack]) == 2
    _, err = capsys.readouterr()
    assert err.startswith(f"estimate: {line}") and err.count("\n") == 1, err


def test_a_key_without_namespace_and_a_date_value_are_read_as_before(capsys, stacks):
    stack = stacks("loose", "config:\n  nodeCount: 2\n")
    assert plan.main(["--stack", stack]) == 2
    assert "config error: nodeCount: no provider reads the namespace 'nodeCount'" in capsys.readouterr().err
    stack = stacks("dated", REGION + "  gpu-k8s:gpuTestRun: 2027-01-15\n")  # yaml.v3 keeps a date as its text
    assert harness.effective_config(stack)["gpu-k8s:gpuTestRun"] == "2027-01-15"


CREDENTIALS = ["alicloud:accessKey", "alicloud:secretKey", "alicloud:securityToken"]


@pytest.mark.parametrize("key", CREDENTIALS)
def test_a_plain_text_credential_in_the_stack_file_is_refused(capsys, stacks, key):
    stack = stacks("plain", f"{REGION}  {key}: LTAI-do-not-echo\n")
    code = plan.main(["--stack", stack])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    env = "ALICLOUD_SECURITY_TOKEN" if key.endswith("Token") else "ALICLOUD_ACCESS_KEY/ALICLOUD_SECRET_KEY"
    assert err.startswith(
        f"gpu-k8s plan: config error: {key} is stored in plain text in stacks/Pulumi.plain.yaml; "
        f"expected `pulumi config set --secret {key}` (a secure: value) or the {env} environment variable"
    ), err
    assert "LTAI-do-not-echo" not in err


@pytest.mark.parametrize("flag", ["--config", "--config-path"])
def test_a_credential_given_as_plain_text_on_the_command_line_is_refused(capsys, flag):
    code = plan.main(["--stack", "dev", flag, "alicloud:secretKey=LTAI-do-not-echo"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith(f"gpu-k8s plan: config error: alicloud:secretKey given with {flag} is plain text"), err
    assert "pulumi config set --secret alicloud:secretKey" in err and "LTAI-do-not-echo" not in err


def test_a_secure_credential_in_the_stack_file_is_planned(capsys, stacks):
    stack = stacks("sealed", f"{REGION}  alicloud:accessKey:\n    secure: v1:AAAA\n  alicloud:secretKey:\n    secure: v1:BBBB\n")
    code = plan.main(["--stack", stack, "--urns", "^$"])
    assert code == 0, capsys.readouterr().err
