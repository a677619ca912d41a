"""CUDA compatibility rules (pure): driver branch -> CUDA, minor-version compat, GRID refusal."""

from __future__ import annotations

import pytest

from components.config import ConfigError
from components.config.kubeadm import parse_grid_driver_version
from components.facts import catalog, cuda

GRID_470_SEED = "470.161.03"  # the seed's A10-2Q (sgn7i-vws), GRID driver, CUDA 11.4


@pytest.mark.parametrize(
    ("driver", "expected"),
    [("470.161.03", "11.4"), ("535.129.03", "12.2"), ("550.127.05", "12.4"), ("570.26", "12.8"), ("580.65.06", "13.0")],
)
def test_driver_branch_max_cuda(driver, expected):
    assert cuda.driver_cuda(driver) == expected


def test_unlisted_branches_get_a_lower_bound():
    assert cuda.driver_cuda("510.47.03") == "11.4"  # really 11.6: never claim more
    assert cuda.driver_cuda("595.91.07") == "13.0"
    with pytest.raises(ValueError, match="predates"):
        cuda.driver_cuda("450.80.02")
    with pytest.raises(ValueError, match="not an NVIDIA driver version"):
        cuda.driver_cuda("latest")


def test_native_support_passes_on_both_driver_kinds():
    for kind in ("tesla", "grid"):
        result = cuda.check("11.2", GRID_470_SEED, kind)
        assert result.ok and result.via == "driver" and result.driver_cuda == "11.4"


ANY_BRANCH = frozenset(cuda.BRANCH_MAX_CUDA)  # an image that would exempt every branch


def test_minor_version_compatibility_on_tesla_only():
    tesla = cuda.check("12.5", "535.129.03", "tesla", {470, 535, 550})
    assert tesla.ok and tesla.via == "minor-version compatibility"
    assert cuda.check("11.7", "470.256.03", "tesla", {470}).ok  # >= 450.80.02
    grid = cuda.check("12.5", "535.183.06", "grid", {470, 535, 550})
    assert not grid.ok and grid.via is None and "GRID" in grid.reason
    assert not cuda.check("11.7", "470.256.03", "grid", {470}).ok


def test_minor_version_compatibility_needs_the_major_baseline():
    assert not cuda.check("12.3", "470.256.03", "tesla", ANY_BRANCH).ok  # 12.x needs >= 525.60.13
    assert cuda.check("12.9", "525.60.13", "tesla", ANY_BRANCH).ok
    assert not cuda.check("12.9", "525.60.11", "tesla", ANY_BRANCH).ok
    assert not cuda.check("13.0", "570.26", "tesla", ANY_BRANCH).ok  # 13.x needs >= 580.65.06


def test_minor_version_compatibility_only_for_the_branches_the_image_exempts():
    """The toolkit enforces NVIDIA_REQUIRE_CUDA: a branch it does not list is refused."""
    for driver in ("525.147.05", "545.23.08"):
        refused = cuda.check("12.5", driver, "tesla", {470, 535, 550})
        assert not refused.ok and f"not branch {driver[:3]}" in refused.reason and "470, 535, 550" in refused.reason
    assert not cuda.check("12.3", "535.129.03", "tesla").ok  # no known list: no exemption
    assert cuda.check("12.3", "545.23.08", "tesla").ok  # the driver's own CUDA needs none


# Per Tesla driver branch: the vectoradd tag picked, and which known images run (issue 12).
KNOWN = {
    "12.5": f"{cuda.VECTORADD_REPO}:vectoradd-cuda12.5.0",
    "11.7": f"{cuda.VECTORADD_REPO}:vectoradd-cuda11.7.1-ubuntu20.04",
    "11.6": f"{cuda.VECTORADD_REPO}:vectoradd-cuda11.6.0",
    "11.2": f"{cuda.VECTORADD_REPO}:vectoradd-cuda11.2.1",
    "10.2": f"{cuda.VECTORADD_REPO}:vectoradd-cuda10.2",
    "tf2.6": cuda.TENSORFLOW_IMAGE,
    "tf2.16": "tensorflow/tensorflow:2.16.1-gpu",
}


@pytest.mark.parametrize(
    ("driver", "kind", "picked", "refused"),
    [
        ("470.256.03", "tesla", "11.7", {"12.5", "tf2.16"}),  # 12.5 lists 470, but 12.x needs >= 525.60.13
        ("525.147.05", "tesla", "11.7", {"12.5", "tf2.16"}),  # 12.5.0 does not list 525
        ("535.129.03", "tesla", "12.5", {"tf2.16"}),  # listed: minor-version compatibility
        ("545.23.08", "tesla", "11.7", {"12.5"}),  # 12.5.0 does not list 545
        ("550.127.05", "tesla", "12.5", set()),  # listed
        ("570.26", "tesla", "12.5", set()),  # CUDA 12.8: no exemption needed
        ("580.65.06", "tesla", "12.5", set()),  # CUDA 13.0
        ("470.256.03", "grid", "11.2", {"12.5", "11.7", "11.6", "tf2.16"}),  # Aliyun's default GRID
        ("535.183.06", "grid", "11.7", {"12.5", "tf2.16"}),  # sgn8ia
    ],
)
def test_cuda_rule_per_driver_branch_against_the_known_images(driver, kind, picked, refused):
    assert cuda.pick_vectoradd_image([(driver, kind)]) == KNOWN[picked]
    runs = {
        name
        for name, image in KNOWN.items()
        if cuda.compatibility_error(image, cuda.known_image_cuda(image), driver, kind) is None
    }
    assert set(KNOWN) - runs == refused


def test_refusal_names_the_exempt_branches_and_a_fitting_driver():
    message = cuda.compatibility_error(KNOWN["12.5"], "12.5", "525.147.05", "tesla")
    assert message and "NVIDIA_REQUIRE_CUDA exempts branches 470, 535, 550, not 525" in message
    assert "vectoradd-cuda11.7.1-ubuntu20.04" in message and "driverVersion of branch 535, 550, 555, 560 or newer" in message


def test_seed_tensorflow_2_6_runs_on_grid_470():
    image = cuda.TENSORFLOW_IMAGE
    need, error = cuda.image_cuda_requirement(image, None)
    assert (need, error) == ("11.2", None)
    assert cuda.compatibility_error(image, need, GRID_470_SEED, "grid") is None


def test_seed_tensorflow_latest_is_refused_on_grid_470_with_a_fix():
    image = "tensorflow/tensorflow:latest-gpu"
    need, _ = cuda.image_cuda_requirement(image, None)
    assert need == "12.3"
    message = cuda.compatibility_error(image, need, GRID_470_SEED, "grid")
    assert message is not None
    for part in (image, "CUDA 12.3", GRID_470_SEED, "CUDA 11.4", "cuda>=12.3", "Fix:", "vectoradd-cuda11.2.1"):
        assert part in message


def test_tesla_refusal_suggests_a_driver():
    message = cuda.compatibility_error("tensorflow/tensorflow:latest-gpu", "12.3", "470.256.03", "tesla")
    assert message and "driverVersion of branch 545, 550, 555, 560 or newer" in message
    assert "vectoradd-cuda11.7.1-ubuntu20.04" in message


def test_image_requirements_from_table_tag_or_declaration():
    assert cuda.image_cuda_requirement("docker.io/tensorflow/tensorflow:2.6.0-gpu", None) == ("11.2", None)
    assert cuda.image_cuda_requirement("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04", None) == ("12.5", None)
    assert cuda.image_cuda_requirement("nvidia/cuda:12.2.0-base-ubuntu22.04", None) == ("12.2", None)
    assert cuda.image_cuda_requirement("example.com/my/app:1.0", "11.8") == ("11.8", None)


def test_unknown_image_without_declared_cuda_is_an_error():
    need, error = cuda.image_cuda_requirement("example.com/my/app:1.0", None)
    assert need is None and "gpu-k8s:smokeTestCudaVersion" in error


def test_declared_cuda_must_agree_and_be_well_formed():
    _, error = cuda.image_cuda_requirement(cuda.TENSORFLOW_IMAGE, "11.0")
    assert error and "contradicts" in error and "TensorFlow release built on CUDA 11.2 or newer" in error
    # TensorFlow's table is a lower bound: a higher declared CUDA is believed.
    assert cuda.image_cuda_requirement(cuda.TENSORFLOW_IMAGE, "12.0") == ("12.0", None)
    _, error = cuda.image_cuda_requirement("example.com/my/app:1.0", "12")
    assert error and "MAJOR.MINOR" in error


def test_vectoradd_table_agrees_with_its_tags():
    for tag, need in cuda.VECTORADD_TAGS:
        assert cuda.known_image_cuda(f"{cuda.VECTORADD_REPO}:{tag}") == need


@pytest.mark.parametrize(
    ("drivers", "tag"),
    [
        ([("470.256.03", "grid")], "vectoradd-cuda11.2.1"),  # GRID 470 / CUDA 11.4: an 11.x tag
        ([("535.129.03", "tesla")], "vectoradd-cuda12.5.0"),  # minor-version compat
        ([("470.256.03", "tesla")], "vectoradd-cuda11.7.1-ubuntu20.04"),
        ([("535.183.06", "grid")], "vectoradd-cuda11.7.1-ubuntu20.04"),  # sgn8ia: 12.2, no compat
        ([("535.129.03", "tesla"), ("470.256.03", "grid")], "vectoradd-cuda11.2.1"),  # mixed pools
    ],
)
def test_default_vectoradd_tag_fits_every_driver(drivers, tag):
    image = cuda.pick_vectoradd_image(drivers)
    assert image == f"{cuda.VECTORADD_REPO}:{tag}"
    need = cuda.known_image_cuda(image)
    assert all(cuda.check(need, version, kind, cuda.known_exempt_branches(image)).ok for version, kind in drivers)


def test_no_fitting_vectoradd_is_an_error(monkeypatch):
    monkeypatch.setattr(cuda, "VECTORADD_TAGS", (("vectoradd-cuda12.5.0", "12.5"),))
    with pytest.raises(cuda.CudaIncompatible, match="GRID 470.256.03"):
        cuda.pick_vectoradd_image([("535.129.03", "tesla"), ("470.256.03", "grid")])


def test_grid_driver_per_family():
    assert cuda.grid_driver_for(catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge")) == "470.256.03"
    assert cuda.grid_driver_for(catalog.profile_for("ecs.sgn8ia-m2.xlarge")) == "535.183.06"
    with pytest.raises(ValueError, match="Tesla"):
        cuda.grid_driver_for(catalog.profile_for("ecs.gn5i-c2g1.large"))
    assert cuda.node_driver(catalog.profile_for("ecs.gn5i-c2g1.large"), "535.129.03") == "535.129.03"


def test_select_test_image():
    grid = [("470.256.03", "grid")]
    assert cuda.select_test_image("tensorflow", None, None, grid) == (cuda.TENSORFLOW_IMAGE, "11.2")
    assert cuda.select_test_image("vectoradd", None, None, grid)[1] == "11.2"
    with pytest.raises(cuda.CudaIncompatible, match="latest-gpu needs CUDA 12.3"):
        cuda.select_test_image("tensorflow", "tensorflow/tensorflow:latest-gpu", None, grid)
    assert cuda.smoke_test_error("none", "tensorflow/tensorflow:latest-gpu", None, grid) is None
    assert "smokeTestCudaVersion" in cuda.smoke_test_error("vectoradd", "example.com/x:1", None, grid)


# --- gpu-k8s:gridDriverVersion (issue 12 item 8) ----------------------------------------


def test_grid_driver_version_overrides_the_family_default():
    sgn7i = catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge")
    assert cuda.node_driver(sgn7i, "535.129.03") == "470.256.03"
    assert cuda.node_driver(sgn7i, "535.129.03", "535.183.06") == "535.183.06"
    gn5i = catalog.profile_for("ecs.gn5i-c2g1.large")
    assert cuda.node_driver(gn5i, "535.129.03", "550.127.05") == "535.129.03"  # Tesla nodes keep driverVersion


@pytest.mark.parametrize("bad", ["latest", "535", "390.87", "GRID-16.5", " 535.183.06"])
def test_grid_driver_version_format_is_validated(bad):
    with pytest.raises(ConfigError) as err:
        parse_grid_driver_version(bad)
    assert err.value.key == "gridDriverVersion" and "470.256.03" in str(err.value) and "branch 470 or newer" in str(err.value)


def test_grid_driver_version_empty_or_a_version():
    assert parse_grid_driver_version("") == ""
    assert parse_grid_driver_version("550.127.05") == "550.127.05"


# --- images by content, not by name (issue 22) ---------------------------------------------


@pytest.mark.parametrize(
    "image,need,exempt",
    [
        ("registry.cn-hangzhou.aliyuncs.com/team/cuda-sample:vectoradd-cuda12.5.0", "12.5", {470, 535, 550}),
        ("nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0@sha256:" + "a" * 64, "12.5", {470, 535, 550}),
        ("registry.cn-hangzhou.aliyuncs.com/team/vecadd:cuda11.7", "11.7", set()),
        ("example.com/ml/pytorch:2.1.0-cuda12.1-cudnn8-runtime", "12.1", set()),
        ("registry.cn-beijing.aliyuncs.com/x/cuda:12.2.0-base-ubuntu22.04", "12.2", set()),
        ("docker.io/tensorflow/tensorflow:2.14.0-gpu", "11.8", set()),
        ("registry.cn-hangzhou.aliyuncs.com/team/tensorflow:2.15.0-gpu-jupyter", "12.3", set()),
        ("tensorflow/tensorflow:latest-gpu", "12.3", set()),
        ("registry.cn-hangzhou.aliyuncs.com/team/tf-gpu:2.15", None, set()),  # the tag does not say: declare it
        ("example.com/app:1.0", None, set()),
    ],
)
def test_cuda_read_from_the_tag_in_any_registry(image, need, exempt):
    assert cuda.known_image_cuda(image) == need
    assert cuda.known_exempt_branches(image) == frozenset(exempt)


def test_a_copy_of_a_sample_is_offered_its_fitting_copy():
    message = cuda.compatibility_error("acr.example.com/t/cuda-sample:vectoradd-cuda12.5.0", "12.5", "470.256.03", "grid")
    assert "acr.example.com/t/cuda-sample:vectoradd-cuda11.2.1 (CUDA 11.2, copied from nvcr.io)" in message
