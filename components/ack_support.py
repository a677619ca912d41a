"""What ACK supports, dated and sourced: versions, GPU families, drivers, fees (pure data).

Read by components/config.py (plan-time checks: nothing is created for a config ACK would
refuse) and components/ack.py. Every entry names its source; ``UNVERIFIED`` marks what no
source confirmed. Facts as of FACTS_DATE; ACK changes them, so a newer version or driver is
refused with the table's date in the message rather than guessed at.
"""

from __future__ import annotations

import re
from decimal import Decimal

from components import catalog, cuda

FACTS_DATE = "2026-11-29"

# cs.ManagedKubernetes cluster_spec (pulumi-alicloud docs): Pro (managed, SLA, billed) or Basic.
CLUSTER_SPECS = {
    "ack.pro.small": "ACK Pro (managed control plane with SLA; cluster management fee per hour)",
    "ack.standard": "ACK Basic (no cluster fee, no SLA)",
}

# ACK Kubernetes versions (ACK release notes), newest first.
KUBERNETES_VERSIONS = ("1.34.1-aliyun.1", "1.33.3-aliyun.1", "1.32.7-aliyun.1")
_VERSION_RE = re.compile(r"^1\.(\d{2})\.(\d{1,2})-aliyun\.(\d{1,2})$")
VERSION_ACCEPTED = f"an ACK Kubernetes version such as {KUBERNETES_VERSIONS[0]} ({', '.join(KUBERNETES_VERSIONS)})"

# The NVIDIA driver versions ACK installs through the node pool label (ACK docs).
DRIVER_VERSIONS = ("550.144.03", "535.161.08", "470.82.01")
# Without the label ACK installs its default for the cluster's version.
DEFAULT_DRIVER = "550.144.03"

# GPU compute families ACK node pools take (ACK "supported GPU instance families").
GPU_FAMILIES = frozenset({"gn6i", "gn6v", "gn6e", "gn7i", "gn7e", "gn8is", "ebmgn7i", "ebmgn6i", "gn5i"})
FAMILIES_ACCEPTED = "a GPU compute family ACK node pools support: " + ", ".join(sorted(GPU_FAMILIES))

# The Service range of the managed cluster (ACK console default): not the VPC, not the pods.
SERVICE_CIDR = "172.21.0.0/20"
# The node pools' OS image: ACK's default, with its GPU node setup.
GPU_IMAGE_TYPE = "AliyunLinux3"
# ACK's NVIDIA device plugin, for the allocatable check's diagnosis.
DEVICE_PLUGIN_NAMESPACE = "kube-system"
DEVICE_PLUGIN_SELECTOR = "component=nvidia-device-plugin"
# None: the long-lived kubeconfig, the same on every run (a temporary one would change every
# `up`, updating the provider and re-running the checks that read it).
KUBECONFIG_MINUTES: int | None = None
# What `pulumi destroy` deletes with the cluster (delete_options resource types).
DELETED_WITH_CLUSTER = ("SLB", "ALB", "SLS_Data", "SLS_ControlPlane", "PrivateZone")

# Hourly fees in CNY beside the nodes: name -> (price, source).
_FEES: dict[str, dict[str, tuple[Decimal, str]]] = {
    "ack.pro.small": {
        "ACK Pro cluster management fee": (Decimal("0.64"), "UNVERIFIED"),
        "API server load balancer (CLB)": (Decimal("0.12"), "UNVERIFIED"),
    },
    "ack.standard": {
        "API server load balancer (CLB)": (Decimal("0.12"), "UNVERIFIED"),
    },
}


def cluster_fees(spec: str) -> dict[str, tuple[Decimal, str]]:
    return dict(_FEES[spec])


def check_kubernetes_version(version: str) -> str | None:
    """None when ACK offers ``version`` (per the dated table), else why not."""
    m = _VERSION_RE.match(version)
    if not m:
        return "it is not an ACK version string MAJOR.MINOR.PATCH-aliyun.N."
    if version in KUBERNETES_VERSIONS:
        return None
    return f"ACK's version list of {FACTS_DATE} does not have it (ACK creates only the versions it offers)."


def default_driver(kubernetes_version: str) -> str:
    """The driver ACK installs on a GPU node without the driver label."""
    return DEFAULT_DRIVER


def pool_problem(profile: catalog.GpuProfile, driver_version: str) -> str | None:
    """Why ACK cannot run this pool, or None."""
    if profile.driver != catalog.TESLA:
        return (
            f"{profile.family} is a vGPU family (GRID driver); ACK node pools install the Tesla driver only. "
            "Fix: use a GPU compute family (e.g. ecs.gn6i-c4g1.xlarge), or gpu-k8s:cluster kubeadm for vGPU."
        )
    if profile.family not in GPU_FAMILIES:
        return f"ACK's supported GPU families ({FACTS_DATE}) do not list {profile.family}."
    try:
        cuda.driver_cuda(driver_version)
    except ValueError:
        return f"the driver {driver_version} is not in the CUDA table."
    return None
