"""gpu-k8s:nodeImage bake (issue 25): the bake, the boot from it, and what the next `up` does."""

from __future__ import annotations

import pytest
from helpers import env_of, run_stack

from components.config import ConfigError
from components.kubeadm import bake
from tools.engine import CREATE, DELETE, SAME
from tools.harness import ProgramRun, run_program
from tools.mocks import PlaceholderMocks

IMAGE = "m-bp1ubuntu2204a"
IMAGE_TYPE = "alicloud:ecs/image:Image"


def world(**facts) -> PlaceholderMocks:
    return PlaceholderMocks(clock=lambda: 1_800_000_000, zones=["cn-hangzhou-h"], image=IMAGE, **facts)


def changes(run: ProgramRun) -> dict[str, str]:
    return {c.name: c.op for c in run.changes if c.op != SAME}


@pytest.fixture(scope="module")
def baking() -> ProgramRun:
    """The first `up` of p4 with nodeImage bake: a builder bakes beside the stock node."""
    return run_program("p4", {"gpu-k8s:nodeImage": "bake"}, mocks=world())


def test_first_up_bakes_beside_a_stock_node(baking):
    (image,) = [r for r in baking.resources if r.type == IMAGE_TYPE]
    assert image.inputs["instanceId"] == baking.named("bake-tesla-instance").id
    assert image.options["retainOnDelete"] is True and "instanceId" in image.options["replaceOnChanges"]
    tags = image.inputs["tags"]
    assert tags["gpu-k8s-driver-version"] == "535.129.03" and tags["gpu-k8s-driver-kind"] == "tesla"
    assert len(tags["gpu-k8s-bake-key"]) == 16
    # The builder runs the node steps up to the pre-pull, then the cleaning step; never kubeadm.
    names = {r.name for r in baking.resources}
    assert {"bake-tesla-bootstrap-nvidia-driver", "bake-tesla-bootstrap-prefetch-images", "bake-tesla-image-clean"} <= names
    assert not any(n.startswith("bake-tesla") and "kubeadm" in n for n in names)
    assert baking.named("bake-tesla-image-clean").urn in image.dependencies
    # This run's node is stock: the image does not exist yet.
    assert env_of(baking.named("gpu-0-image"))["IMAGE"] == IMAGE


def test_the_cost_names_the_snapshot_storage(baking):
    baked = baking.outputs["cost"]["bakedImages"]["tesla"]
    assert baked["monthly"] == "at most 7.20" and "snapshot storage" in baked["item"] and "make delete-images" in baked["item"]


def test_next_up_boots_new_nodes_from_the_image_and_keeps_running_disks(baking):
    again = run_program("p4", {"gpu-k8s:nodeImage": "bake", "gpu-k8s:nodeCount": "2"}, mocks=world(), previous=baking)
    ops = changes(again)
    # The builder goes; the image leaves the program (retained in the cloud, not deleted).
    assert ops["bake-tesla-instance"] == DELETE and ops["gpu-k8s-bake-tesla-image"] == DELETE
    (image_state,) = [s for s in baking.resources if s.type == IMAGE_TYPE]
    # The running node keeps its disk; the new one boots from the baked image.
    assert "gpu-0-instance" not in ops
    assert ops["gpu-1-instance"] == CREATE
    assert env_of(again.named("gpu-1-image"))["IMAGE"] == image_state.id
    assert again.outputs["cost"]["bakedImages"]["tesla"]["image"] == image_state.id


def test_a_change_of_what_the_image_holds_bakes_again(baking):
    run = run_program(
        "p4", {"gpu-k8s:nodeImage": "bake", "gpu-k8s:containerToolkitVersion": "1.17.7"}, mocks=world(), previous=baking
    )
    assert [r for r in run.resources if r.type == IMAGE_TYPE]  # a new key: not found, so a new bake


def test_a_retained_image_after_make_down_is_booted_from(baking):
    cfg = {"gpu-k8s:nodeImage": "bake"}
    (image,) = [r for r in baking.resources if r.type == IMAGE_TYPE]
    kept = world()
    kept.baked_images = [{"id": "m-baked1", "imageId": "m-baked1", "name": "baked", "tags": dict(image.inputs["tags"])}]
    fresh = run_program("p4", cfg, mocks=kept)  # a new stack state (after `make down`), the image still there
    assert not [r for r in fresh.resources if r.type == IMAGE_TYPE or r.name.startswith("bake-tesla")]
    assert env_of(fresh.named("gpu-0-image"))["IMAGE"] == "m-baked1"


def test_grid_pools_bake_per_family_marked_undocumented_and_a_pinned_image_excludes_a_bake():
    run = run_stack("mixed", nodeImage="bake")
    images = {r.name: r.inputs["tags"] for r in run.resources if r.type == IMAGE_TYPE}
    assert set(images) == {"gpu-k8s-bake-tesla-image", "gpu-k8s-bake-grid-sgn7i-vws-image"}
    assert images["gpu-k8s-bake-grid-sgn7i-vws-image"]["gpu-k8s-grid-plugin"] == "grid_driver_install"
    assert run.named("bake-tesla-instance").inputs["instanceType"] == "ecs.gn6i-c4g1.xlarge"
    assert run.named("bake-grid-sgn7i-vws-instance").inputs["instanceType"] == "ecs.sgn7i-vws-m2s.xlarge"
    assert any("neither documents nor forbids" in w for w in run.warnings)
    with pytest.raises(ConfigError, match="nodeImage"):
        run_stack("p4", nodeImage="bake", imageId="m-bp1custom")


def test_tags_follow_aliyuns_rules():
    with pytest.raises(ValueError, match="acs:"):
        bake.check_tags({"acs:x": "1"})
    with pytest.raises(ValueError, match="at most 20"):
        bake.check_tags({f"k{i}": "v" for i in range(21)})


def test_a_running_stack_switched_to_bake_plans_the_image_beside_its_node():
    stock = run_program("p4", mocks=world())
    switched = run_program("p4", {"gpu-k8s:nodeImage": "bake"}, mocks=world(), previous=stock)
    ops = changes(switched)
    assert ops["gpu-k8s-bake-tesla-image"] == CREATE and ops["bake-tesla-instance"] == CREATE
    assert not [name for name in ops if name.startswith("gpu-0-")]  # the running node: untouched
