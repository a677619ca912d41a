"""make baked-images / delete-images against Aliyun's real SDK with recorded responses."""

from __future__ import annotations

from aliyun_fake import FakeAliyun, install

from components.aliyun import ecs_api
from tools import baked_images

KEYS = {"ALICLOUD_ACCESS_KEY": "LTAI-test-key", "ALICLOUD_SECRET_KEY": "test-secret"}


def _route(action: str, query: dict) -> str:
    return "DescribeImages.baked.json" if action == "DescribeImages" else "ok.json"


def test_delete_removes_the_image_then_its_snapshots(monkeypatch, capsys):
    fake = install(monkeypatch, FakeAliyun(_route))
    assert baked_images.main(["--region", "cn-hangzhou", "--delete"], env=KEYS) == 0
    out = capsys.readouterr().out
    assert "m-bp1baked0000000001  gpu-k8s-tesla-0123456789abcdef" in out and "at most 7.20 CNY/month" in out
    assert fake.actions() == ["DescribeImages", "DeleteImage", "DeleteSnapshot"]
    describe, delete, snapshot = (q for _, q, _ in fake.requests)
    assert describe["ImageOwnerAlias"] == "self" and describe["Tag.1.Key"] == "gpu-k8s-bake" and describe["Tag.1.Value"] == "1"
    assert delete["ImageId"] == "m-bp1baked0000000001" and delete["Force"] == "True"  # the SDK sends the bool as Python prints it
    assert snapshot["SnapshotId"] == "s-bp1snap000000000001"


def test_listing_deletes_nothing_and_no_keys_is_one_line(monkeypatch, capsys):
    fake = install(monkeypatch, FakeAliyun(_route))
    assert baked_images.main(["--region", "cn-hangzhou"], env=KEYS) == 0
    assert fake.actions() == ["DescribeImages"]
    assert baked_images.main(["--region", "cn-hangzhou"], env={}) == 2
    assert "no credentials" in capsys.readouterr().err
    assert ecs_api.OwnImage("m", "n", 1, "", ()).snapshot_ids == ()
