"""tools/stack_secret.py: the kubeconfig and SSH key read from exported state when `up`
failed and recorded no stack outputs."""

from __future__ import annotations

import io
import json

import pytest

from tools import stack_secret

SIG = "4dabf18193072939515e22adb298388d"


def secret(value: str) -> dict:
    # `pulumi stack export --show-secrets` shape of a secret (apitype SecretV1): plaintext is JSON.
    return {SIG: "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps(value)}


def export(*resources: dict) -> dict:
    stack = {"urn": "urn:pulumi:dev::gpu-k8s::pulumi:pulumi:Stack::gpu-k8s-dev", "type": "pulumi:pulumi:Stack", "outputs": {}}
    return {"version": 3, "deployment": {"manifest": {}, "resources": [stack, *resources]}}


KUBECONFIG = {
    "urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:cluster:KubeCluster$command:remote:Command::gpu-k8s-kubeconfig",
    "type": "command:remote:Command",
    "outputs": {"stdout": secret("apiVersion: v1\nkind: Config\n"), "stderr": ""},
}
KEY = {
    "urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:ssh_key:SshKey$tls:index/privateKey:PrivateKey::gpu-k8s-ssh-private-key",
    "type": "tls:index/privateKey:PrivateKey",
    "outputs": {"privateKeyOpenssh": secret("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")},
}


def run(what: str, doc: object, capsys) -> tuple[int, str, str]:
    stdin = io.StringIO(doc if isinstance(doc, str) else json.dumps(doc))
    saved, stack_secret.sys.stdin = stack_secret.sys.stdin, stdin
    try:
        code = stack_secret.main([what])
    finally:
        stack_secret.sys.stdin = saved
    out, err = capsys.readouterr()
    return code, out, err


def test_kubeconfig_and_key_come_from_the_state(capsys):
    assert run("kubeconfig", export(KUBECONFIG, KEY), capsys) == (0, "apiVersion: v1\nkind: Config\n", "")
    code, out, _ = run("ssh-key", export(KUBECONFIG, KEY), capsys)
    assert code == 0 and out.startswith("-----BEGIN OPENSSH PRIVATE KEY-----\n") and out.endswith("KEY-----\n")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (export(KEY), "0 resources of type command:remote:Command"),
        (
            export({**KUBECONFIG, "outputs": {"stdout": {SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "v1:x"}}}),
            "--show-secrets",
        ),
        (export({**KUBECONFIG, "outputs": {}}), "has no stdout"),
        ("not json", "not a `pulumi stack export` document"),
        ([], "not a `pulumi stack export` document"),
        ({"deployment": {"resources": [1]}}, "not a `pulumi stack export` document"),
    ],
)
def test_missing_or_encrypted_values_are_one_line(capsys, doc, message):
    code, out, err = run("kubeconfig", doc, capsys)
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_ack_kubeconfig_comes_from_the_kubernetes_provider_in_state(capsys):
    """ACK has no kubeconfig command: the provider's kubeconfig input is in the state."""
    provider = {
        "urn": "urn:pulumi:ack::gpu-k8s::gpu-k8s:ack:AckCluster$pulumi:providers:kubernetes::gpu-k8s-k8s",
        "type": "pulumi:providers:kubernetes",
        "inputs": {"kubeconfig": secret("apiVersion: v1\nkind: Config\nclusters: []\n")},
    }
    code, out, _ = run("kubeconfig", export(provider, KEY), capsys)
    assert code == 0 and out == "apiVersion: v1\nkind: Config\nclusters: []\n"
    # The kubeadm command wins where both exist (the provider's copy is the same text there).
    code, out, _ = run("kubeconfig", export(KUBECONFIG, provider), capsys)
    assert code == 0 and out == "apiVersion: v1\nkind: Config\n"
    encrypted = {**provider, "inputs": {"kubeconfig": {SIG: "1b47061264138c4ac30d75fd1eb44270", "ciphertext": "x"}}}
    code, _, err = run("kubeconfig", export(encrypted), capsys)
    assert code == 2 and "--show-secrets" in err


@pytest.mark.parametrize(("dest", "why"), [(".", "a directory"), ("no/such/dir/kubeconfig", "no such directory")])
def test_a_file_that_cannot_be_written_is_one_line_before_asking_pulumi(capsys, tmp_path, dest, why):
    assert stack_secret.main(["kubeconfig", "--stack", "dev", "--to", str(tmp_path / dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("make kubeconfig: cannot write ") and err.rstrip().endswith(why) and err.count("\n") == 1
