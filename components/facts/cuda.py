"""CUDA compatibility: will this container image run on this node's NVIDIA driver? (pure)

Sources: shared/reference/nvidia-gpu-on-kubernetes.md section 4 (driver minimums per
CUDA GA, minor-version and forward compatibility) and aliyun-gpu-ecs.md section 1.3
(Aliyun's GRID driver versions). The seed walk-through hit the failure this module
refuses at plan time: ``tensorflow/tensorflow:latest-gpu`` on GRID 470 ->
``unsatisfied condition: cuda>=12.3``.

Rule: an image needing CUDA X.Y runs when the driver's own CUDA is >= X.Y. Otherwise the
NVIDIA Container Toolkit enforces the image's ``NVIDIA_REQUIRE_CUDA``
("cuda>=X.Y brand=tesla,driver>=470,driver<471 ..."): besides ``cuda>=X.Y`` it lets only
the driver branches listed there start the container. So a Tesla/datacenter driver with
a lower CUDA runs the image only when (1) the image lists the driver's branch and (2) CUDA
minor-version compatibility covers it (driver at or above the major's baseline). An image
whose list is not known here gets no exemption. GRID (vGPU) drivers get neither forward
compatibility nor guaranteed minor-version compatibility here, so they are refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from components.facts.catalog import GRID, TESLA, VGPU, GpuProfile

# Highest CUDA each driver branch supports (reference section 4, nvidia-smi's "CUDA Version").
BRANCH_MAX_CUDA: dict[int, str] = {
    470: "11.4",
    525: "12.0",
    535: "12.2",
    545: "12.3",
    550: "12.4",
    555: "12.5",
    560: "12.6",
    565: "12.7",
    570: "12.8",
    575: "12.9",
    580: "13.0",
}
# Minor-version compatibility baseline per CUDA major (the major's first GA driver).
MINOR_COMPAT_MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}

# Aliyun's Cloud Assistant GRID driver (reference aliyun-gpu-ecs.md section 1.3).
GRID_DRIVER_DEFAULT = "470.256.03"
GRID_DRIVER_BY_FAMILY = {"sgn8ia": "535.183.06"}

# Driver branches each known image's NVIDIA_REQUIRE_CUDA exempts from "cuda>=X.Y" (only
# branches >= 470 matter: older drivers are refused by config). The NGC vectoradd samples
# are built on nvidia/cuda base images (gitlab.com/nvidia/container-images/samples,
# deployments/container/Dockerfile.ubuntu), which set NVIDIA_REQUIRE_CUDA in
# gitlab.com/nvidia/container-images/cuda dist/<version>/<os>/base/Dockerfile; read from
# the GitHub mirror taehun-kmu/FMCL-Docker (dist/ is a copy of that tree), every revision:
#   12.5.0 ubuntu2204 (a819e795): 470, 535, 550 (brands tesla, grid, vws, nvidia, ...).
#   11.7.1 ubuntu2004 (b6cc6f5a..684356f0): 470 in every revision (450/510 only in some).
#   11.6.0 ubuntu2004 (1237744b..34b16df1): 418, 450, 470 (460 and 440 only in some).
#   11.2.1 ubuntu2004: 418, 450; 10.2: 396..440. Their CUDA is <= 11.4, which every
#   driver >= 470 supports, so the exemptions never matter here.
# A rebuilt image may carry a newer list; the intersection over revisions is kept.
EXEMPT_BRANCHES: dict[str, frozenset[int]] = {
    "vectoradd-cuda12.5.0": frozenset({470, 535, 550}),
    "vectoradd-cuda11.7.1-ubuntu20.04": frozenset({470}),
    "vectoradd-cuda11.6.0": frozenset({418, 450, 470}),
    "vectoradd-cuda11.2.1": frozenset({418, 450}),
    "vectoradd-cuda10.2": frozenset({418}),
}

VECTORADD_REPO = "nvcr.io/nvidia/k8s/cuda-sample"
# vectoradd tags seen in NVIDIA's own docs/tests and public manifests, newest first.
# Each prints "Test PASSED". There is no vectoradd tag between 11.7 and 12.5.
VECTORADD_TAGS: tuple[tuple[str, str], ...] = (
    ("vectoradd-cuda12.5.0", "12.5"),  # k8s-device-plugin README, gpu-operator tests
    ("vectoradd-cuda11.7.1-ubuntu20.04", "11.7"),  # gpu-operator docs, dcgm-exporter e2e
    ("vectoradd-cuda11.6.0", "11.6"),  # gpu-operator #343 ("for nvidia 525 drivers")
    ("vectoradd-cuda11.2.1", "11.2"),  # NVIDIA cloud-native docs
    ("vectoradd-cuda10.2", "10.2"),  # gpu-operator #343 ("for nvidia 510 drivers")
)
TENSORFLOW_IMAGE = "tensorflow/tensorflow:2.6.0-gpu"  # the seed's, CUDA 11.2 build

# TensorFlow's GPU images, tensorflow/tensorflow:X.Y.Z-gpu: the CUDA of each release's tested
# build (tensorflow.org/install/source#gpu, "Tested build configurations"; tensorflow/docs
# site/en/install/source.md). Up to 2.14 the images are FROM nvidia/cuda of that version, so
# NVIDIA_REQUIRE_CUDA says the same. 2.15's image needs more than its tested build (12.2): the
# seed met "cuda>=12.3" on latest-gpu = 2.15.0 in Nov 2023, so 12.3 is recorded. From 2.16 the
# image's own CUDA per tag is unverified: the tested build's is a lower bound.
TENSORFLOW_CUDA: dict[str, str] = {
    "2.4": "11.0",
    **dict.fromkeys(("2.5", "2.6", "2.7", "2.8", "2.9", "2.10", "2.11"), "11.2"),
    **dict.fromkeys(("2.12", "2.13", "2.14"), "11.8"),
    **dict.fromkeys(("2.15", "2.16", "2.17"), "12.3"),
    **dict.fromkeys(("2.18", "2.19", "2.20", "2.21"), "12.5"),
}
# A moving tag: its requirement as the seed met it in Nov 2023 ("unsatisfied condition:
# cuda>=12.3"). It only grows, so newer pulls fail the same way or worse.
TENSORFLOW_LATEST_CUDA = "12.3"

# How an image's CUDA was learnt: the tag spells it (a vectoradd sample, cudaX.Y, an
# nvidia/cuda X.Y.Z tag) or TensorFlow's release table maps the tag to it.
SPELLED, TF_RELEASE = "tag", "TensorFlow release"
_VECTORADD_TAG_RE = re.compile(r"^vectoradd-cuda(?P<maj>\d+)\.(?P<min>\d+)(?:\.\d+)?(?:-[\w.]+)?$")
_CUDA_IN_TAG_RE = re.compile(r"(?:^|[-_.])cuda-?(?P<maj>\d{1,2})\.(?P<min>\d{1,2})(?:\.\d+)?(?=$|[-_])")
_CUDA_REPO_TAG_RE = re.compile(r"^(?P<maj>\d{1,2})\.(?P<min>\d{1,2})\.\d+(?:-[\w.-]+)?$")
_TENSORFLOW_TAG_RE = re.compile(r"^(?P<version>\d+\.\d+)\.\d+-gpu(?:-jupyter)?$")
_DRIVER_RE = re.compile(r"^(?P<branch>\d{3})\.\d{2,3}(?:\.\d{2,3})?$")
CUDA_VERSION_RE = re.compile(r"^\d{1,2}\.\d{1,2}$")  # MAJOR.MINOR, as config keys take it


class CudaIncompatible(ValueError):
    """No image/driver combination works; the message says what to change."""


@dataclass(frozen=True)
class CudaCheck:
    ok: bool
    reason: str
    image_cuda: str
    driver_version: str
    driver_kind: str
    driver_cuda: str
    via: str | None  # "driver" | "minor-version compatibility" | None when refused
    exempt_branches: frozenset[int] = frozenset()  # the image's NVIDIA_REQUIRE_CUDA exemptions


def _cuda(version: str) -> tuple[int, int]:
    if not CUDA_VERSION_RE.match(version):
        raise ValueError(f"CUDA version {version!r} is not MAJOR.MINOR (e.g. 12.2)")
    major, minor = version.split(".")
    return int(major), int(minor)


def _driver(version: str) -> tuple[int, ...]:
    if not _DRIVER_RE.match(version):
        raise ValueError(f"driver version {version!r} is not an NVIDIA driver version such as 535.129.03")
    return tuple(int(p) for p in version.split("."))


def driver_cuda(driver_version: str) -> str:
    """Highest CUDA the driver supports. Unlisted branches get the nearest lower branch's
    value (a lower bound: never claims more than the driver has)."""
    branch = _driver(driver_version)[0]
    known = [b for b in BRANCH_MAX_CUDA if b <= branch]
    if not known:
        raise ValueError(f"driver {driver_version} predates branch {min(BRANCH_MAX_CUDA)}, the oldest this project knows")
    return BRANCH_MAX_CUDA[max(known)]


def grid_driver_for(profile: GpuProfile) -> str:
    """The GRID driver Aliyun's Cloud Assistant installs on a vGPU family."""
    if profile.kind != VGPU:
        raise ValueError(f"{profile.instance_type} is a compute family: it takes the Tesla driver, not GRID")
    return GRID_DRIVER_BY_FAMILY.get(profile.family, GRID_DRIVER_DEFAULT)


def node_driver(profile: GpuProfile, tesla_driver_version: str, grid_driver_version: str = "") -> str:
    """The driver version a node of this profile runs: gpu-k8s:driverVersion on Tesla nodes;
    on GRID nodes gpu-k8s:gridDriverVersion when set (e.g. the branch gridDriverUrl brings),
    else what Aliyun's plugin installs on the family."""
    if profile.driver != GRID:
        return tesla_driver_version
    return grid_driver_version or grid_driver_for(profile)


def check(image_cuda: str, driver_version: str, driver_kind: str, exempt_branches: Iterable[int] = ()) -> CudaCheck:
    """Whether an image needing ``image_cuda`` runs on this driver (tesla|grid).

    ``exempt_branches``: the driver branches the image's NVIDIA_REQUIRE_CUDA lists besides
    ``cuda>=X.Y`` (EXEMPT_BRANCHES); without the driver's branch there, the toolkit
    refuses the container whatever minor-version compatibility would allow.
    """
    if driver_kind not in (TESLA, GRID):
        raise ValueError(f"driver kind {driver_kind!r} is not {TESLA} or {GRID}")
    need, have_str = _cuda(image_cuda), driver_cuda(driver_version)
    have = _cuda(have_str)
    exempt = frozenset(exempt_branches)
    branch = _driver(driver_version)[0]

    def result(ok: bool, reason: str, via: str | None) -> CudaCheck:
        return CudaCheck(ok, reason, image_cuda, driver_version, driver_kind, have_str, via, exempt)

    if have >= need:
        return result(True, f"driver {driver_version} supports CUDA {have_str} >= {image_cuda}", "driver")
    if driver_kind == GRID:
        return result(
            False,
            f"GRID (vGPU) driver {driver_version} supports CUDA {have_str} < {image_cuda}; vGPU gets no forward "
            "compatibility and minor-version compatibility is not guaranteed on GRID",
            None,
        )
    if branch not in exempt:
        return result(
            False,
            f"driver {driver_version} supports CUDA {have_str} < {image_cuda}, and the image's NVIDIA_REQUIRE_CUDA "
            f"exempts {_branches(exempt)} from cuda>={image_cuda}, not branch {branch}",
            None,
        )
    baseline = MINOR_COMPAT_MIN_DRIVER.get(need[0])
    if baseline is not None and _driver(driver_version) >= _driver(baseline):
        return result(
            True,
            f"driver {driver_version} supports CUDA {have_str}; the image exempts branch {branch} and CUDA {need[0]}.x "
            f"minor-version compatibility (driver >= {baseline}) runs {image_cuda} images (no PTX JIT of newer code)",
            "minor-version compatibility",
        )
    floor = f"needs driver >= {baseline}" if baseline else "has no minor-version compatibility baseline here"
    return result(False, f"driver {driver_version} supports CUDA {have_str} < {image_cuda}, and CUDA {need[0]}.x {floor}", None)


def _branches(exempt: frozenset[int]) -> str:
    return "branches " + ", ".join(str(b) for b in sorted(exempt)) if exempt else "no branch (none known)"


def _reference(image: str) -> tuple[str, str | None]:
    """(repository, tag) of an image reference; a digest pin (@sha256:...) is the same image,
    and Docker Hub names are shortened (docker.io/library/x -> x)."""
    name = image.strip().split("@", 1)[0]
    repository, tag = name, None
    if name.rfind(":") > name.rfind("/"):
        repository, tag = name.rsplit(":", 1)
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if repository.startswith(prefix):
            repository = repository[len(prefix) :]
            break
    return repository.removeprefix("library/"), tag


@dataclass(frozen=True)
class ImageCuda:
    """What an image's tag says about the CUDA it needs, in any registry (an ACR copy of a
    known image is the same image)."""

    cuda: str
    source: str  # SPELLED | TF_RELEASE
    exempt_branches: frozenset[int] = frozenset()


def image_cuda(image: str) -> ImageCuda | None:
    """The CUDA an image needs, read from its tag, or None when the tag does not say."""
    repository, tag = _reference(image)
    if not tag:
        return None
    basename = repository.rsplit("/", 1)[-1]
    if tag in EXEMPT_BRANCHES:  # NVIDIA's vectoradd samples: their NVIDIA_REQUIRE_CUDA is known
        return ImageCuda(dict(VECTORADD_TAGS)[tag], SPELLED, EXEMPT_BRANCHES[tag])
    for pattern in (_VECTORADD_TAG_RE, _CUDA_IN_TAG_RE):
        m = pattern.search(tag)
        if m:
            return ImageCuda(f"{int(m.group('maj'))}.{int(m.group('min'))}", SPELLED)
    if basename == "cuda" and (m := _CUDA_REPO_TAG_RE.match(tag)):
        return ImageCuda(f"{int(m.group('maj'))}.{int(m.group('min'))}", SPELLED)
    m = _TENSORFLOW_TAG_RE.match(tag)
    if m and m.group("version") in TENSORFLOW_CUDA:
        return ImageCuda(TENSORFLOW_CUDA[m.group("version")], TF_RELEASE)
    if basename == "tensorflow" and tag in ("latest-gpu", "latest-gpu-jupyter"):
        return ImageCuda(TENSORFLOW_LATEST_CUDA, TF_RELEASE)
    return None


def known_image_cuda(image: str) -> str | None:
    """The CUDA an image needs, if its tag says so."""
    found = image_cuda(image)
    return found.cuda if found else None


def known_exempt_branches(image: str) -> frozenset[int]:
    """The driver branches the image's NVIDIA_REQUIRE_CUDA exempts, where known (else none)."""
    found = image_cuda(image)
    return found.exempt_branches if found else frozenset()


def image_cuda_requirement(image: str, declared: str | None) -> tuple[str | None, str | None]:
    """(cuda, None) or (None, error). ``declared`` is gpu-k8s:smokeTestCudaVersion.

    A CUDA the tag spells wins (a declared one that contradicts it is a mistake); one read
    from TensorFlow's release table is a lower bound, so a declared CUDA replaces it.
    """
    if declared is not None and not CUDA_VERSION_RE.match(declared):
        return None, f"gpu-k8s:smokeTestCudaVersion {declared!r} is not MAJOR.MINOR, e.g. 11.4 or 12.2"
    found = image_cuda(image)
    if found is not None and declared is not None:
        spelled = found.source == SPELLED
        if _cuda(declared) < _cuda(found.cuda) or (spelled and _cuda(declared) != _cuda(found.cuda)):
            says = f"whose tag says CUDA {found.cuda}" if spelled else f"a {found.source} built on CUDA {found.cuda} or newer"
            return None, (
                f"gpu-k8s:smokeTestCudaVersion {declared} contradicts {image}, {says}; "
                "unset smokeTestCudaVersion or use another image"
            )
    if declared is not None:
        return declared, None
    if found is not None:
        return found.cuda, None
    return None, (
        f"the CUDA version {image} needs is unknown (its tag does not say); set gpu-k8s:smokeTestCudaVersion to it "
        "(MAJOR.MINOR, e.g. 12.2) so it can be checked against the node drivers"
    )


def _fitting_vectoradd(drivers: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    drivers = list(drivers)
    for tag, cuda in VECTORADD_TAGS:
        if all(check(cuda, version, kind, EXEMPT_BRANCHES[tag]).ok for version, kind in drivers):
            return f"{VECTORADD_REPO}:{tag}", cuda
    return None


def _why_not(result: CudaCheck) -> str:
    if result.driver_kind == GRID:
        return "GRID (vGPU) drivers get no forward or guaranteed minor-version compatibility"
    major = _cuda(result.image_cuda)[0]
    branch = _driver(result.driver_version)[0]
    if branch not in result.exempt_branches:
        return f"the image's NVIDIA_REQUIRE_CUDA exempts {_branches(result.exempt_branches)}, not {branch}"
    baseline = MINOR_COMPAT_MIN_DRIVER.get(major)
    if baseline:
        return f"CUDA {major}.x minor-version compatibility needs driver >= {baseline}"
    return f"CUDA {major}.x has no minor-version compatibility baseline here"


def _driver_fix(result: CudaCheck) -> str:
    need = _cuda(result.image_cuda)
    if result.driver_kind == GRID:
        return (
            f"a compute family (ecs.gn*, Tesla driver); Aliyun's GRID drivers are {GRID_DRIVER_DEFAULT} (CUDA 11.4), "
            f"{GRID_DRIVER_BY_FAMILY['sgn8ia']} (CUDA 12.2) on sgn8ia"
        )
    # Branches that run it: those whose CUDA is high enough, and the exempt ones at or
    # above the major's minor-version baseline.
    baseline = MINOR_COMPAT_MIN_DRIVER.get(need[0])
    fits = sorted(
        {b for b, cuda in BRANCH_MAX_CUDA.items() if _cuda(cuda) >= need}
        | {b for b in result.exempt_branches if baseline and b in BRANCH_MAX_CUDA and b >= _driver(baseline)[0]}
    )
    if fits:
        more = " or newer" if len(fits) > 4 else ""
        return f"gpu-k8s:driverVersion of branch {', '.join(str(b) for b in fits[:4])}{more}"
    return "use an image built for an older CUDA"


def _alternative_image(image: str, fitting: str) -> str:
    """The fitting vectoradd sample where the user's image lives: a copy of a sample (an ACR
    repository) gets the same repository with the fitting tag, to be copied there too."""
    repository, tag = _reference(image)
    upstream_tag = fitting.rsplit(":", 1)[1]
    if tag in EXEMPT_BRANCHES and repository != VECTORADD_REPO:
        return f"{repository}:{upstream_tag} (CUDA {{cuda}}, copied from nvcr.io)"
    return f"{fitting} (CUDA {{cuda}})"


def compatibility_error(image: str, needed_cuda: str, driver_version: str, driver_kind: str) -> str | None:
    """None when the image runs on the driver, else a message with the numbers and a fix."""
    result = check(needed_cuda, driver_version, driver_kind, known_exempt_branches(image))
    if result.ok:
        return None
    fixes = []
    alternative = _fitting_vectoradd([(driver_version, driver_kind)])
    if alternative and _reference(image)[1] != alternative[0].rsplit(":", 1)[1]:
        fixes.append("the image " + _alternative_image(image, alternative[0]).format(cuda=alternative[1]))
    fixes.append(_driver_fix(result))
    return (
        f"{image} needs CUDA {needed_cuda}; {driver_kind.upper()} driver {driver_version} supports CUDA {result.driver_cuda} and "
        f"{_why_not(result)}, so the container fails 'unsatisfied condition: cuda>={needed_cuda}'. Fix: " + "; or ".join(fixes)
    )


def pick_vectoradd_image(drivers: Sequence[tuple[str, str]]) -> str:
    """Newest vectoradd image that runs on every (driver_version, driver_kind) given."""
    if not drivers:
        raise ValueError("pick_vectoradd_image needs at least one (driver_version, driver_kind)")
    found = _fitting_vectoradd(drivers)
    if found is None:
        listed = ", ".join(f"{kind.upper()} {version}" for version, kind in dict.fromkeys(drivers))
        raise CudaIncompatible(f"no vectoradd image runs on every node driver ({listed}); split the pools or align the drivers")
    return found[0]


def select_test_image(
    test: str, image: str | None, declared_cuda: str | None, drivers: Sequence[tuple[str, str]]
) -> tuple[str, str]:
    """(image, cuda) for the smoke test on these (driver_version, driver_kind) nodes.

    ``test`` is vectoradd|tensorflow; ``image`` replaces the default. Raises
    CudaIncompatible naming image, CUDA, driver and a fix when any node can't run it.
    """
    if test not in ("vectoradd", "tensorflow"):
        raise ValueError(f"test {test!r} has no image (vectoradd or tensorflow)")
    if image is None:
        image = pick_vectoradd_image(drivers) if test == "vectoradd" else TENSORFLOW_IMAGE
    cuda, error = image_cuda_requirement(image, declared_cuda)
    if error:
        raise CudaIncompatible(error)
    assert cuda is not None
    for version, kind in dict.fromkeys(drivers):
        message = compatibility_error(image, cuda, version, kind)
        if message:
            raise CudaIncompatible(message)
    return image, cuda


def smoke_test_error(test: str, image: str | None, declared_cuda: str | None, drivers: Sequence[tuple[str, str]]) -> str | None:
    """select_test_image's refusal as a message (for a plan-time ConfigError), or None."""
    if test == "none":
        return None
    try:
        select_test_image(test, image, declared_cuda, drivers)
    except CudaIncompatible as err:
        return str(err)
    return None
