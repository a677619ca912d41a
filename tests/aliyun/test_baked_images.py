"""make baked-images / delete-images against Aliyun's real SDK with recorded responses."""

from __future__ import annotations

import json
import subprocess

import pytest
from aliyun_fake import FakeAliyun, install

from components.aliyun import ecs_api
from tools import baked_images

KEYS = {"ALICLOUD_ACCESS_KEY": "LTAI-test-key", "ALICLOUD_SECRET_KEY": "test-secret"}


class Cloud:
    """Lists the image until DeleteImage has been asked for (then none), answers the rest ok."""

    def __init__(self):
        self.deleted = False

    def route(self, action: str, query: dict) -> str:
        if action == "DeleteImage":
            self.deleted = True
        if action == "DescribeImages":
            return "DescribeImages.none.json" if self.deleted else "DescribeImages.baked.json"
        return "ok.json"


def test_delete_removes_the_image_waits_then_removes_its_snapshots(monkeypatch, capsys):
    fake = install(monkeypatch, FakeAliyun(Cloud().route))
    argv = ["--region", "cn-hangzhou", "--stack", "p4", "--delete"]
    assert baked_images.main(argv, env=KEYS, api_factory=lambda r, c: ecs_api.EcsApi(r, c, sleep=lambda s: None)) == 0
    out = capsys.readouterr().out
    assert "m-bp1baked0000000001  gpu-k8s-tesla-0123456789abcdef" in out and "at most 7.20 CNY/month" in out
    assert fake.actions() == ["DescribeImages", "DeleteImage", "DescribeImages", "DeleteSnapshot"]
    describe, delete, gone, snapshot = (q for _, q, _ in fake.requests)
    assert describe["ImageOwnerAlias"] == "self" and describe["Tag.1.Key"] == "gpu-k8s-bake" and describe["Tag.1.Value"] == "1"
    assert describe["Tag.2.Key"] == "gpu-k8s-baked-by-stack" and describe["Tag.2.Value"] == "p4"  # this stack's only
    assert "CreateFailed" in describe["Status"] and gone["ImageId"] == "m-bp1baked0000000001"
    assert delete["ImageId"] == "m-bp1baked0000000001" and delete["Force"] == "True"  # the SDK sends the bool as Python prints it
    assert snapshot["SnapshotId"] == "s-bp1snap000000000001"


def test_listing_deletes_nothing_and_no_keys_is_one_line(monkeypatch, capsys):
    fake = install(monkeypatch, FakeAliyun(Cloud().route))
    assert baked_images.main(["--region", "cn-hangzhou", "--stack", "p4", "--all"], env=KEYS) == 0
    assert fake.actions() == ["DescribeImages"] and "Tag.2.Key" not in fake.requests[0][1]
    assert baked_images.main(["--region", "cn-hangzhou", "--stack", "p4"], env={}) == 2
    assert "no credentials" in capsys.readouterr().err


def test_builders_in_state_names_only_bake_builders():
    """By the NodeImageBake component the instance is in, not by its name: a pool may be called "bake"."""
    pool_named_bake = {
        "urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:node:Node$alicloud:ecs/instance:Instance::bake-0-instance",
        "type": "alicloud:ecs/instance:Instance",
    }
    builder = {
        "urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:bake:NodeImageBake$gpu-k8s:node:Node$alicloud:ecs/instance:Instance::"
        "bake-grid-sgn7i-vws-0a1b2c3d-instance",
        "type": "alicloud:ecs/instance:Instance",
    }
    image = {
        "urn": "urn:pulumi:dev::gpu-k8s::gpu-k8s:bake:NodeImageBake$alicloud:ecs/image:Image::x",
        "type": "alicloud:ecs/image:Image",
    }
    assert baked_images.builders_in_state({"deployment": {"resources": [pool_named_bake, builder, image]}}) == [
        "bake-grid-sgn7i-vws-0a1b2c3d-instance"
    ]
    assert baked_images.builders_in_state({"deployment": {}}) == baked_images.builders_in_state([]) == []


def test_a_stack_without_a_file_is_one_line(capsys):
    assert baked_images.main(["--stack", "nope"], env=KEYS) == 2
    err = capsys.readouterr().err
    assert err.startswith("baked-images: ") and err.count("\n") == 1 and "Traceback" not in err


BUILDER_STATE = json.dumps(
    {
        "deployment": {
            "resources": [
                {
                    "urn": "urn:pulumi:p4::gpu-k8s::gpu-k8s:bake:NodeImageBake$gpu-k8s:node:Node$"
                    "alicloud:ecs/instance:Instance::bake-tesla-0a1b2c3d-instance",
                    "type": "alicloud:ecs/instance:Instance",
                }
            ]
        }
    }
)


@pytest.mark.parametrize("yes", [False, True])
def test_the_second_up_asks_as_the_first_did(monkeypatch, yes):
    """After `extend`, `retest`, ... (their up runs with --yes) the up that deletes a builder asks nothing either."""
    calls = []

    def run(argv, **kw):
        calls.append(argv[1:])
        return subprocess.CompletedProcess(argv, 0, stdout=BUILDER_STATE if argv[1:3] == ["stack", "export"] else "", stderr="")

    monkeypatch.setattr(baked_images, "_pulumi", lambda: "/bin/pulumi")
    assert baked_images.after_up("p4", False, yes=yes, run=run) == 0
    assert calls[-1] == ["up", "-s", "p4", *(["--yes"] if yes else [])]


def test_no_pulumi_cli_is_one_line_after_up(monkeypatch, capsys):
    monkeypatch.setattr(baked_images, "_pulumi", lambda: None)
    assert baked_images.after_up("p4", False) == 0
    assert capsys.readouterr().err == "make: the pulumi CLI is not on PATH: cannot look for a bake builder left in the state\n"
