"""GPU catalog: classify any Aliyun ECS instance type into a GPU profile (pure).

Rules (shared/reference/aliyun-gpu-ecs.md section 1): ``ecs.gn*`` and ``ecs.ebmgn*``
(and ``ecs.scc*gn*``) pass whole GPUs through and need the Tesla/datacenter driver;
``ecs.vgn*`` and ``ecs.sgn*`` are vGPU slices and need the GRID driver. The prefix
decides, never the ``-vws`` suffix: ``sgn8ia`` has none and ``vgn6i-m4-vws`` puts it
after the size token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

COMPUTE, VGPU = "compute", "vgpu"
TESLA, GRID = "tesla", "grid"

_TYPE_RE = re.compile(r"^ecs\.(?P<prefix>[a-z0-9]+(?:-[a-z0-9]+)*)\.(?P<size>[a-z0-9]+)$")
_GRID_RE = re.compile(r"^[vs]gn\d")
_TESLA_RE = re.compile(r"^(?:ebm|scc)?gn\d")
_SIZE_RE = re.compile(r"^(?:(?P<n>\d+)?(?P<x>x)?large|medium|small)$")
_CG_RE = re.compile(r"(?:^|-)c(?P<c>\d+)g(?P<g>\d+)(?:-|$)")
_MEM_RE = re.compile(r"(?:^|-)m(?P<m>\d+)s?(?:-|$)")


@dataclass(frozen=True)
class _Family:
    gpu_model: str | None  # as nvidia-smi names the whole GPU
    gpu_memory_gib: int | None  # of one whole GPU
    note: str = ""
    gpus_per_instance: int | None = None  # fixed count (bare metal, or no cXgY token)
    grid_plugin: str | None = None  # Cloud Assistant plugin that installs GRID
    vgpu_name: str | None = None  # how nvidia-smi names a slice, {m} = GiB of the slice
    generation: str | None = None  # NVIDIA architecture (components/facts/architectures.py)
    # MIG needs an A100/A30/H100-class GPU (NVIDIA MIG user guide, "Supported GPUs"); P4, T4,
    # V100, A10 and L20 have none, and a GRID vGPU slice is no MIG device. None: unknown.
    mig_capable: bool | None = False


# Families the catalog knows in detail. GPU models and memory from reference section 1.2.
FAMILIES: dict[str, _Family] = {
    "gn5i": _Family("Tesla P4", 8, generation="Pascal"),
    "gn6i": _Family("Tesla T4", 16, generation="Turing"),
    "gn6v": _Family("Tesla V100-SXM2-16GB", 16, generation="Volta"),
    "gn6e": _Family("Tesla V100-SXM2-32GB", 32, generation="Volta"),
    "gn7i": _Family("NVIDIA A10", 24, generation="Ampere"),
    # Ampere: every 80 GB part of that generation (A100/A800) is Ampere; the model is unverified.
    "gn7e": _Family(
        None,
        80,
        note="GPU model not named by Aliyun's table (A100 per third parties, unverified)",
        generation="Ampere",
        mig_capable=None,  # an A100 would have MIG; the model is unverified
    ),
    "gn8is": _Family(
        "NVIDIA L20",
        48,
        gpus_per_instance=None,
        note="sold only in some regions outside mainland China",
        generation="Ada Lovelace",
    ),
    "ebmgn6i": _Family("Tesla T4", 16, gpus_per_instance=4, note="bare metal", generation="Turing"),
    "ebmgn7i": _Family("NVIDIA A10", 24, gpus_per_instance=4, note="bare metal", generation="Ampere"),
    "vgn5i": _Family("Tesla P4", 8, grid_plugin=None, note="legacy vGPU: GRID via gridDriverUrl only", generation="Pascal"),
    "vgn6i": _Family("Tesla T4", 16, grid_plugin="grid_driver_install", vgpu_name="GRID T4-{m}Q", generation="Turing"),
    "vgn7i-vws": _Family("NVIDIA A10", 24, grid_plugin="grid_driver_install", vgpu_name="NVIDIA A10-{m}Q", generation="Ampere"),
    "sgn7i-vws": _Family("NVIDIA A10", 24, grid_plugin="grid_driver_install", vgpu_name="NVIDIA A10-{m}Q", generation="Ampere"),
    "sgn8ia": _Family(
        None,
        None,
        grid_plugin="gpu_grid_driver_install",
        note="Lovelace vGPU; slice size from the type name",
        generation="Ada Lovelace",
    ),
}

# Dated list prices for the offline estimate (CNY per hour, pay-as-you-go on-demand, instance
# only: no disk or traffic). Source: the price table generated from Aliyun's prices in
# cloudpilot-ai/karpenter-provider-alibabacloud pkg/providers/pricing/initial-on-demand-prices.json
# @5d2e0774 (2024-12-31; unchanged at cb536aff, 2025-09-25), cn-hangzhou. Corroborated: the seed's
# console screenshot (Nov 2023, cn-beijing) shows ecs.sgn7i-vws-m2s.xlarge at 1.831/h and the seed
# calls gn5i-c2g1.large "8-point-something"; a DescribePrice quote of Sep 2026 for gn6i-c4g1.xlarge
# is 11.84/h with a 100 GiB ESSD. The deployed stack asks Aliyun for the real price; other regions
# differ (e.g. cn-zhangjiakou is cheaper), so these only label the plan.
_PRICE_TABLE = "karpenter-provider-alibabacloud on-demand price table, cn-hangzhou, 2024-12-31"
LIST_PRICES: dict[str, tuple[Decimal, str]] = {
    "ecs.sgn7i-vws-m2s.xlarge": (Decimal("1.833"), _PRICE_TABLE),
    "ecs.gn5i-c2g1.large": (Decimal("8.68"), _PRICE_TABLE),
    "ecs.gn6i-c4g1.xlarge": (Decimal("11.63"), _PRICE_TABLE),
    "ecs.gn7i-c8g1.2xlarge": (Decimal("9.5326"), _PRICE_TABLE),
}

# Spot availability where a source says so; None means unknown (not checked).
SPOT_UNAVAILABLE: dict[str, str] = {}


class UnknownInstanceType(ValueError):
    """Not a GPU instance type (or not an instance type at all)."""

    def __init__(self, instance_type: str, reason: str):
        self.instance_type = instance_type
        self.accepted = "a GPU instance type (" + reason + "); supported families: " + ", ".join(supported_families())
        super().__init__(f"{instance_type!r}: {self.accepted}")


@dataclass(frozen=True)
class GpuProfile:
    """What a node of this instance type needs and has."""

    instance_type: str
    family: str
    kind: str  # compute | vgpu
    driver: str  # tesla | grid
    gpu_model: str | None  # the whole GPU, as nvidia-smi names it on a compute node
    vgpu_name: str | None  # how nvidia-smi names a vGPU slice, e.g. "NVIDIA A10-2Q"
    gpu_count: int | None  # whole GPUs (compute); 1 slice (vgpu); None when unknown
    gpu_fraction: str | None  # vGPU share of one GPU, e.g. "1/12"
    gpu_memory_gib: float | None  # per node
    vcpus: int | None
    grid_plugin: str | None
    list_price_cny: Decimal | None
    price_source: str | None
    spot_available: bool | None
    known_family: bool
    note: str = ""
    generation: str | None = None  # NVIDIA architecture; None when the catalog cannot tell
    mig_capable: bool | None = None  # whether the GPU can be partitioned with MIG; None: unknown

    @property
    def expected_gpu_name(self) -> str | None:
        """The name nvidia-smi should print, where the catalog can tell."""
        return self.vgpu_name if self.kind == VGPU else self.gpu_model

    def summary(self) -> str:
        model = self.gpu_model or "GPU model unknown"
        if self.kind == VGPU:
            share = f"{self.gpu_fraction} of " if self.gpu_fraction else "slice of "
            return f"{share}{model} (vGPU, {self.driver.upper()} driver)"
        count = f"{self.gpu_count}x " if self.gpu_count else ""
        return f"{count}{model} (compute, {self.driver.capitalize()} driver)"


def supported_families() -> list[str]:
    return sorted(FAMILIES)


def _vcpus(size: str) -> int | None:
    m = _SIZE_RE.match(size)
    if not m or size in ("medium", "small"):
        return None
    if not m.group("x"):
        return 2  # large
    return 4 * int(m.group("n") or 1)


def _family_of(prefix: str) -> str | None:
    """Longest known family that the type's prefix starts with (as a whole token)."""
    for fam in sorted(FAMILIES, key=len, reverse=True):
        if prefix == fam or prefix.startswith(fam + "-"):
            return fam
    return None


def profile_for(instance_type: str) -> GpuProfile:
    """Classify an instance type; raises UnknownInstanceType for non-GPU or malformed names."""
    m = _TYPE_RE.match(instance_type or "")
    if not m:
        raise UnknownInstanceType(instance_type, "names look like ecs.<family>[-<spec>].<size>")
    prefix, size = m.group("prefix"), m.group("size")
    if _GRID_RE.match(prefix):
        kind, driver = VGPU, GRID
    elif _TESLA_RE.match(prefix):
        kind, driver = COMPUTE, TESLA
    else:
        raise UnknownInstanceType(instance_type, "ecs.gn*/ebmgn* for whole GPUs, ecs.vgn*/sgn* for vGPU")
    family_key = _family_of(prefix)
    fam = FAMILIES.get(family_key or "", _Family(None, None))
    vcpus = _vcpus(size)
    rest = prefix[len(family_key) :] if family_key else prefix

    gpu_count, fraction, memory, vgpu_name = None, None, None, None
    if kind == COMPUTE:
        cg = _CG_RE.search(rest)
        if fam.gpus_per_instance:
            gpu_count = fam.gpus_per_instance
        elif cg and vcpus:
            gpu_count = max(1, vcpus * int(cg.group("g")) // int(cg.group("c")))
        if gpu_count and fam.gpu_memory_gib:
            memory = float(gpu_count * fam.gpu_memory_gib)
    else:
        gpu_count = 1
        mem = _MEM_RE.search(rest)
        if mem:
            memory = float(mem.group("m"))
            if fam.gpu_memory_gib:
                frac = Fraction(int(mem.group("m")), fam.gpu_memory_gib)
                fraction = f"{frac.numerator}/{frac.denominator}"
            if fam.vgpu_name:
                vgpu_name = fam.vgpu_name.format(m=mem.group("m"))
    price = LIST_PRICES.get(instance_type)
    return GpuProfile(
        instance_type=instance_type,
        family=family_key or prefix.split("-")[0],
        kind=kind,
        driver=driver,
        gpu_model=fam.gpu_model,
        vgpu_name=vgpu_name,
        gpu_count=gpu_count,
        gpu_fraction=fraction,
        gpu_memory_gib=memory,
        vcpus=vcpus,
        grid_plugin=fam.grid_plugin if kind == VGPU else None,
        list_price_cny=price[0] if price else None,
        price_source=price[1] if price else None,
        spot_available=False if instance_type in SPOT_UNAVAILABLE else None,
        known_family=family_key is not None,
        note=fam.note,
        generation=fam.generation,
        mig_capable=fam.mig_capable if family_key else None,
    )


def product_label(gpu_name: str) -> str:
    """nvidia.com/gpu.product value: the nvidia-smi name with spaces as dashes."""
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", gpu_name.strip()).strip("-_.")
    return label[:63].rstrip("-_.")


# --- non-GPU types: vCPU and memory, for the control-plane size check ------------------
# kubeadm needs >= 2 vCPU and >= 1.7 GiB on a control plane. Aliyun's instance family
# pages (help.aliyun.com/zh/ecs/user-guide/overview-of-instance-families; not fetched
# here, values as listed there) give these; the rules below cover the regular families.
NON_GPU_SIZES: dict[str, tuple[int, float]] = {
    "ecs.t5-lc2m1.nano": (1, 0.5),
    "ecs.t5-lc1m1.small": (1, 1.0),
    "ecs.t5-lc1m2.small": (1, 2.0),
    "ecs.t5-c1m1.large": (2, 2.0),
    "ecs.t6-c4m1.large": (2, 0.5),
    "ecs.t6-c2m1.large": (2, 1.0),
    "ecs.t6-c1m1.large": (2, 2.0),
    "ecs.g7.large": (2, 8.0),
    "ecs.c7.large": (2, 4.0),
    "ecs.r7.large": (2, 16.0),
}
# GiB of memory per vCPU of the regular families: c = compute (1:2), g = general (1:4),
# r = memory (1:8); generations 5 to 8, optionally with a letter suffix (g7a, c8i, ...).
_REGULAR_FAMILY_RE = re.compile(r"^ecs\.(?:hf)?(?P<kind>[cgr])(?P<gen>[5-8])[a-z]*\.(?P<size>\d*x?large)$")
_MEMORY_PER_VCPU = {"c": 2, "g": 4, "r": 8}
# Burstable t5/t6: cXmY = X vCPU per Y GiB ("lc" = low baseline); sub-"large" sizes have 1 vCPU.
_BURSTABLE_RE = re.compile(r"^ecs\.t[56]-l?c(?P<c>\d+)m(?P<m>\d+)\.(?P<size>nano|micro|small|\d*x?large)$")


def non_gpu_size(instance_type: str) -> tuple[int | None, float | None]:
    """(vCPU, memory GiB) of a non-GPU type, or (None, None) when the catalog cannot tell."""
    if instance_type in NON_GPU_SIZES:
        return NON_GPU_SIZES[instance_type]
    m = _REGULAR_FAMILY_RE.match(instance_type)
    if m:
        vcpus = _vcpus(m.group("size"))
        return (vcpus, float(vcpus * _MEMORY_PER_VCPU[m.group("kind")])) if vcpus else (None, None)
    m = _BURSTABLE_RE.match(instance_type)
    if m:
        vcpus = 1 if m.group("size") in ("nano", "micro", "small") else _vcpus(m.group("size"))
        if vcpus:
            return vcpus, vcpus * int(m.group("m")) / int(m.group("c"))
    return None, None


def bake_target(profile: GpuProfile) -> str:
    """Which baked node image a GPU node of this profile boots from (gpu-k8s:nodeImage bake):
    "tesla" for every compute family (one Tesla driver), "grid-<family>" per vGPU family."""
    return TESLA if profile.driver == TESLA else f"grid-{profile.family}"
