"""gpu-k8s:nodeImage bake (issue 25): the bake, the boot from it, and what the next `up` does."""

from __future__ import annotations

import helpers
import pytest
from helpers import IMAGE, env_of, run_stack, world

from components.config import ConfigError
from components.kubeadm import bake
from tools.engine import CREATE, DELETE
from tools.harness import ProgramRun, run_program

IMAGE_TYPE = "alicloud:ecs/image:Image"
BAKE = {"gpu-k8s:nodeImage": "bake"}


def changes(run: ProgramRun) -> dict[str, str]:
    return {name: op for name, (op, _) in helpers.changes(run).items()}


def images(run: ProgramRun) -> list:
    return [r for r in run.resources if r.type == IMAGE_TYPE]


def builder(run: ProgramRun, target: str = "tesla") -> str:
    (name,) = [
        r.name.removesuffix("-instance")
        for r in run.resources
        if r.name.startswith(f"bake-{target}-") and r.name.endswith("-instance")
    ]
    return name


@pytest.fixture(scope="module")
def baking() -> ProgramRun:
    """The first `up` of p4 with nodeImage bake: a builder bakes after the GPU test, the node is stock."""
    return run_program("p4", BAKE, mocks=world())


def test_first_up_bakes_after_the_gpu_test_beside_a_stock_node(baking):
    (image,) = images(baking)
    host = builder(baking)
    assert image.inputs["instanceId"] == baking.named(f"{host}-instance").id
    assert image.options["retainOnDelete"] is True
    tags = image.inputs["tags"]
    assert tags["gpu-k8s-driver-version"] == "535.129.03" and tags["gpu-k8s-driver-kind"] == "tesla"
    assert host == f"bake-tesla-{tags['gpu-k8s-bake-key'][:8]}"  # the key names the builder: a new key, a new bake
    assert tags["gpu-k8s-base-image"] == IMAGE
    names = {r.name for r in baking.resources}
    assert {f"{host}-bootstrap-nvidia-driver", f"{host}-bootstrap-prefetch-images", f"{host}-image-clean"} <= names
    assert not any(n.startswith("bake-") and "kubeadm" in n for n in names)
    assert baking.named(f"{host}-image-clean").urn in image.dependencies
    # The builder waits for the cluster's GPU test: a failed bake never holds up the cluster.
    bake_component = next(r for r in baking.resources if r.type == "gpu-k8s:bake:NodeImageBake")
    assert baking.named("gpu-k8s-smoke-gpu-test-result").urn in bake_component.dependencies
    # This run's node is stock: the image does not exist yet.
    assert env_of(baking.named("gpu-0-image"))["IMAGE"] == IMAGE


def test_make_up_finds_the_builder_by_its_urn(baking):
    """tools.baked_images reads the builder out of `pulumi stack export` by the URN the program gives it."""
    from tools.baked_images import builders_in_state

    export = {"deployment": {"resources": [{"urn": r.urn, "type": r.type} for r in baking.resources]}}
    assert builders_in_state(export) == [f"{builder(baking)}-instance"]


def test_the_cost_names_the_snapshot_storage_and_the_builder(baking):
    baked = baking.outputs["cost"]["bakedImages"]["tesla"]
    assert baked["monthly"] == "at most 7.20" and "snapshot storage" in baked["item"] and "make delete-images" in baked["item"]
    assert "one more ecs.gn5i-c2g1.large (8.68 CNY/h)" in baked["builder"]


def test_next_up_boots_new_nodes_from_the_image_and_keeps_running_disks(baking):
    again = run_program("p4", {**BAKE, "gpu-k8s:nodeCount": "2"}, mocks=world(), previous=baking)
    ops = changes(again)
    (image_state,) = images(baking)
    # The builder goes; the image leaves the program (retained in the cloud, not deleted).
    assert ops[f"{builder(baking)}-instance"] == DELETE and ops[image_state.name] == DELETE
    assert not images(again)
    # The running node keeps its disk; the new one boots from the baked image.
    assert "gpu-0-instance" not in ops
    assert ops["gpu-1-instance"] == CREATE
    assert env_of(again.named("gpu-1-image"))["IMAGE"] == image_state.id
    assert again.outputs["cost"]["bakedImages"]["tesla"]["image"] == image_state.id


def test_the_image_stays_in_the_account_for_every_later_up(baking):
    """It leaves the state on the second `up` (retain_on_delete) but not the cloud: a third `up`
    still finds it by its key, bakes nothing and boots a new node from it."""
    second = run_program("p4", BAKE, mocks=world(), previous=baking)
    third = run_program("p4", {**BAKE, "gpu-k8s:nodeCount": "2"}, mocks=world(), previous=second)
    (image_state,) = images(baking)
    assert [i["id"] for i in third.retained_images] == [image_state.id]
    assert not images(third) and not [r for r in third.resources if r.name.startswith("bake-")]
    assert env_of(third.named("gpu-1-image"))["IMAGE"] == image_state.id


def test_a_change_of_what_the_image_holds_bakes_a_new_image(baking):
    run = run_program("p4", {**BAKE, "gpu-k8s:containerToolkitVersion": "1.17.7"}, mocks=world(), previous=baking)
    ops = changes(run)
    (old,), (new,) = images(baking), images(run)
    assert new.name != old.name and ops[new.name] == CREATE  # never an update of the old image
    assert ops[old.name] == DELETE and ops[f"{builder(baking)}-instance"] == DELETE  # retained; its builder goes


def test_a_smaller_system_disk_is_another_image(baking):
    (old,) = images(baking)
    smaller = run_program("p4", {**BAKE, "gpu-k8s:systemDiskGiB": "40"}, mocks=world(), previous=baking)
    (new,) = images(smaller)
    assert new.inputs["tags"]["gpu-k8s-bake-key"] != old.inputs["tags"]["gpu-k8s-bake-key"]
    assert env_of(smaller.named("gpu-0-image"))["IMAGE"] == IMAGE  # not booted from the 60 GB image


def test_a_retained_image_after_make_down_is_booted_from(baking):
    (image,) = images(baking)
    kept = world()
    kept.baked_images = [{"id": "m-baked1", "imageId": "m-baked1", "name": "baked", "tags": dict(image.inputs["tags"])}]
    fresh = run_program("p4", BAKE, mocks=kept)  # a new stack state (after `make down`), the image still there
    assert not images(fresh) and not [r for r in fresh.resources if r.name.startswith("bake-")]
    assert env_of(fresh.named("gpu-0-image"))["IMAGE"] == "m-baked1"


@pytest.mark.parametrize(
    ("status", "said"),
    [("Creating", "another `up` is baking it"), ("CreateFailed", "`make delete-images` removes it, then the next `up` bakes")],
)
def test_an_image_of_the_key_in_another_status_starts_no_second_builder(baking, status, said):
    """Creating: a bake is under way. CreateFailed: it never becomes usable, and its name blocks a new one."""
    (image,) = images(baking)
    busy = world()
    busy.baked_images = [{"id": "m-busy", "imageId": "m-busy", "name": "b", "status": status, "tags": dict(image.inputs["tags"])}]
    run = run_program("p4", BAKE, mocks=busy)
    assert not images(run) and env_of(run.named("gpu-0-image"))["IMAGE"] == IMAGE
    assert any(f"is {status}" in w and said in w for w in run.warnings)


def test_grid_pools_bake_per_family_marked_undocumented_and_a_pinned_image_excludes_a_bake():
    run = run_stack("mixed", nodeImage="bake")
    by_target = {r.inputs["tags"]["gpu-k8s-bake-target"]: r.inputs["tags"] for r in images(run)}
    assert set(by_target) == {"tesla", "grid-sgn7i-vws"}
    assert by_target["grid-sgn7i-vws"]["gpu-k8s-grid-plugin"] == "grid_driver_install"
    assert run.named(f"{builder(run)}-instance").inputs["instanceType"] == "ecs.gn6i-c4g1.xlarge"
    assert run.named(f"{builder(run, 'grid-sgn7i-vws')}-instance").inputs["instanceType"] == "ecs.sgn7i-vws-m2s.xlarge"
    assert any("neither documents nor forbids" in w for w in run.warnings)
    with pytest.raises(ConfigError, match="nodeImage"):
        run_stack("p4", nodeImage="bake", imageId="m-bp1custom")


def test_a_running_stack_switched_to_bake_plans_the_image_beside_its_node():
    stock = run_program("p4", mocks=world())
    switched = run_program("p4", BAKE, mocks=world(), previous=stock)
    ops = changes(switched)
    (image,) = images(switched)
    assert ops[image.name] == CREATE and ops[f"{builder(switched)}-instance"] == CREATE
    assert not [name for name in ops if name.startswith("gpu-0-")]  # the running node: untouched


def test_tags_follow_aliyuns_rules():
    with pytest.raises(ValueError, match="acs:"):
        bake.check_tags({"acs:x": "1"})
    with pytest.raises(ValueError, match="at most 20"):
        bake.check_tags({f"k{i}": "v" for i in range(21)})
