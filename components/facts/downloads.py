"""What gpu-k8s can verify about what it downloads on a node (pure data, no resources).

Apt repository keys are checked in the scripts against their published fingerprints (see
20-container-runtime.sh and 30-kube-packages.sh). The Tesla driver is a .run file from
us.download.nvidia.com. No NVIDIA-published checksum for these files was found (NVIDIA's
redist JSON manifests, developer.download.nvidia.com/compute/nvidia-driver/redist/, cover
the driver tarballs, not the .run), and third-party recipe checksums are not NVIDIA's: a
SHA-256 goes in this table only when it comes from NVIDIA itself. None is listed yet, so
every Tesla download is unverified and the plan says so (config.py warns); step 11
verifies the .run when a version is listed here.
"""

from __future__ import annotations

# driver version -> SHA-256 of NVIDIA-Linux-x86_64-<version>.run, as published by NVIDIA.
TESLA_RUN_SHA256: dict[str, str] = {}


def tesla_run_sha256(version: str) -> str:
    """The published SHA-256 of the Tesla .run for ``version``, or "" when none is known."""
    return TESLA_RUN_SHA256.get(version, "")
