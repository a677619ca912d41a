"""Which NVIDIA driver branches support which GPU generation (pure, sourced).

Sources:
- NVIDIA, "CUDA Toolkit, Driver, and Architecture Matrix" (docs.nvidia.com/datacenter/tesla/
  drivers/cuda-toolkit-driver-and-architecture-matrix.html, v580 docs, Aug 2025): Maxwell,
  Pascal and Volta have "Last Driver Support R580"; Turing, Ampere, Ada, Hopper and Blackwell
  are "Ongoing". First CUDA per architecture: Turing 10.0, Ampere 11.0, Ada and Hopper 11.8,
  Blackwell 12.8.
- NVIDIA's Unix driver deprecation schedule: "The release 580 series will be the last to
  support GPUs based on the Maxwell, Pascal, and Volta architectures" (590+ ignores them:
  "supported through the NVIDIA 580.xx Legacy drivers", NixOS/nixos-hardware#1880).
- The first branch of an architecture is the first driver of its first CUDA release (CUDA
  release notes, "CUDA Toolkit and Corresponding Driver Versions"): CUDA 10.0 -> 410.48,
  11.0 -> 450.36.06, 11.8 -> 520.61.05, 12.8 -> 570.86.

- Within a generation some GPUs came later (NVIDIA/open-gpu-kernel-modules README, "Compatible
  GPUs", first release listing each; NVIDIA vGPU 12.2 release notes for the A10): A10 R460,
  L20 R535.

GRID (vGPU guest) drivers are built from the same branches, so the same bounds apply to them.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "NVIDIA's CUDA Toolkit, Driver and Architecture Matrix"


@dataclass(frozen=True)
class Generation:
    name: str
    first_branch: int | None  # the oldest branch that drives it (None: older than any we accept)
    last_branch: int | None  # the newest branch that drives it (None: still supported)


GENERATIONS: dict[str, Generation] = {
    "Maxwell": Generation("Maxwell", None, 580),
    "Pascal": Generation("Pascal", None, 580),
    "Volta": Generation("Volta", None, 580),
    "Turing": Generation("Turing", 410, None),
    "Ampere": Generation("Ampere", 450, None),
    "Ada Lovelace": Generation("Ada Lovelace", 520, None),
    "Hopper": Generation("Hopper", 520, None),
    "Blackwell": Generation("Blackwell", 570, None),
}


# GPUs whose first branch is later than their generation's (as nvidia-smi names them).
MODEL_FIRST_BRANCH: dict[str, int] = {"NVIDIA A10": 460, "NVIDIA L20": 535}


def branch_of(driver_version: str) -> int:
    return int(driver_version.split(".", 1)[0])


def support_error(generation: str, driver_version: str, gpu_model: str | None = None) -> str | None:
    """Why this driver cannot drive a GPU of this generation (and model), or None when it can."""
    gen = GENERATIONS[generation]
    branch = branch_of(driver_version)
    first = MODEL_FIRST_BRANCH.get(gpu_model or "")
    if first is not None and branch < first:
        return f"driver {driver_version} (branch {branch}) predates the {gpu_model}, first driven by R{first}"
    if gen.last_branch is not None and branch > gen.last_branch:
        return (
            f"driver {driver_version} (branch {branch}) does not drive {gen.name} GPUs: R{gen.last_branch} is the last "
            f"branch for Maxwell, Pascal and Volta ({SOURCE}); 590 and newer ignore the GPU"
        )
    if gen.first_branch is not None and branch < gen.first_branch:
        return (
            f"driver {driver_version} (branch {branch}) predates {gen.name} GPUs, whose first branch is "
            f"R{gen.first_branch} ({SOURCE})"
        )
    return None


def supported_branches(generation: str, gpu_model: str | None = None) -> str:
    """The accepted branches, in words, for an error's 'expected' part."""
    gen = GENERATIONS[generation]
    if gen.last_branch is not None:
        return f"a driver of branch {gen.last_branch} or older (R{gen.last_branch} is the last for {gen.name}), e.g. 580.95.05"
    first = max(MODEL_FIRST_BRANCH.get(gpu_model or "", 0), gen.first_branch or 0)
    return f"a driver of branch {first} or newer for {gpu_model or gen.name}, e.g. 580.95.05"
