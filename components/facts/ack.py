"""What ACK supports, dated and sourced: versions, GPU families, drivers, fees (pure data).

Read by components/config/ (plan-time checks: nothing is created for a config ACK would
refuse) and components/ack/backend.py. Every entry names its source; ``UNVERIFIED`` marks what no
source confirmed. Facts as of FACTS_DATE; ACK changes them, so a newer version or driver is
refused with the table's date in the message rather than guessed at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from decimal import Decimal

from components.facts import catalog

FACTS_DATE = "2026-11-29"

# cs.ManagedKubernetes cluster_spec (terraform-provider-alicloud docs/r/cs_managed_kubernetes).
# Both have an HA control plane run by ACK; Pro adds an SLA and a fee (ACK Pro billing page,
# https://help.aliyun.com/zh/ack/ack-managed-and-ack-dedicated/product-overview/ack-pro-cluster-billing).
# Basic is "only for personal learning and testing", at most 2 clusters per account and 10
# worker nodes each (ACK cluster overview, Jul 2025); whether new Basic clusters can still be
# created in 2026 is UNVERIFIED (no end-of-sale notice found).
CLUSTER_SPECS = {
    "ack.pro.small": "ACK Pro (managed HA control plane, SLA; cluster management fee per hour)",
    "ack.standard": "ACK Basic (managed HA control plane, no SLA, no fee; learning and testing only)",
}

# ACK Basic's worker-node limit per cluster ("ACK cluster overview", Jul 2025: at most 10
# worker nodes per cluster, no quota increase; Pro: 5,000).
BASIC_MAX_NODES = 10

# ACK Kubernetes versions offered for new clusters, newest first ("Kubernetes versions supported
# by ACK", updated 2026-10-06, and the 1.36/1.35 release notes: 1.36.1-aliyun.1 with containerd
# 2.1.6, 1.35.1-aliyun.1 with containerd 2.1.5; 1.34 reached end of support on 2026-09-30).
# tools/fixtures/ack-kubernetes-versions.json (the offline API answer) lists the same.
KUBERNETES_VERSIONS = ("1.36.1-aliyun.1", "1.35.1-aliyun.1")
_VERSION_RE = re.compile(r"^1\.(\d{2})\.(\d{1,2})-aliyun\.(\d{1,2})$")
VERSION_ACCEPTED = f"an ACK Kubernetes version: {', '.join(KUBERNETES_VERSIONS)} (ACK's list of {FACTS_DATE})"

# Drivers ACK installs through the node pool label ack.aliyun.com/nvidia-driver-version, for
# clusters 1.28 and later ("Node NVIDIA driver version list", help.aliyun.com/zh/ack/
# ack-managed-and-ack-dedicated/user-guide/node-nvidia-driver-version-list, Nov 2025). A label
# value not in ACK's list makes ACK install its default instead, silently (document 207292), so
# the plan refuses it. Every 470, 510, 515 and 525 driver and 535.129.03 are "incompatible with
# the latest operating systems. Do not use them on new nodes" (document 2402382, Mar 2026).
DRIVER_VERSIONS = ("570.169", "570.133.20", "550.163.01", "550.144.03", "550.90.07", "535.230.02", "535.161.07")
# Without the label ACK installs its default (535.161.07 for 1.28 and later; 570.169 on gn9t),
# and "ACK periodically updates the default driver version" (same page): the node pools always
# carry the label, so a node added months later runs the driver the plan checked.

# The Service range of the managed cluster (ACK's network planning example, document 86500);
# outside the VPC (10.0.0.0/16) and the default pod range. Fixed at creation (ForceNew).
SERVICE_CIDR = "172.21.0.0/20"
# The node pools' OS image: Alibaba Cloud Linux 3, ACK's default, with its GPU node setup.
GPU_IMAGE_TYPE = "AliyunLinux3"
# ack-nvidia-device-plugin: pods in kube-system labelled component=nvidia-device-plugin
# (document 207292: "kubectl get po -n kube-system -l component=nvidia-device-plugin").
DEVICE_PLUGIN_NAMESPACE = "kube-system"
DEVICE_PLUGIN_SELECTOR = "component=nvidia-device-plugin"
# None: the long-lived kubeconfig (3-year certificate, DescribeClusterUserKubeconfig), the same
# on every run. A temporary one (15-4320 minutes) would be new on every `up`: the provider and
# the checks that read it would change each time.
KUBECONFIG_MINUTES: int | None = None
# delete_options: what `pulumi destroy` deletes with the cluster. The provider's defaults keep
# the log projects (SLS_Data, SLS_ControlPlane) and ALB, which bill after the cluster is gone.
DELETED_WITH_CLUSTER = ("SLB", "ALB", "SLS_Data", "SLS_ControlPlane")
FAMILIES_ACCEPTED = "a GPU compute family (gn*, ebmgn*): ACK node pools run no vGPU family"
# ESS scheduled tasks start at most 90 days after they are made (pulumi-alicloud ess.ScheduledTask
# launch_time), so the scale-to-zero TTL is at most that.
MAX_TTL_HOURS = 90 * 24
# The task is made after the cluster (about 15 minutes) and the node pools (their nodes), but
# its time is anchored before them: 2 hours leaves it in the future (a margin, not measured).
MIN_TTL_HOURS = 2

_PRO_FEE_SOURCE = "ACK Pro cluster management fee, CNY 0.64 per cluster-hour (ACK Pro billing page)"
_CLB_SOURCE = (
    "API server CLB instance fee, CNY 0.147/h (CLB pay-as-you-go billing page); "
    "its capacity units, public IP fee and traffic are billed by use and not included"
)
# Hourly fees in CNY beside the nodes, which the node pools' TTL does not stop: name -> (price, source).
_FEES: dict[str, dict[str, tuple[Decimal, str]]] = {
    "ack.pro.small": {
        "cluster management fee (ACK Pro)": (Decimal("0.64"), _PRO_FEE_SOURCE),
        "API server load balancer (CLB)": (Decimal("0.147"), _CLB_SOURCE),
    },
    "ack.standard": {
        "API server load balancer (CLB)": (Decimal("0.147"), _CLB_SOURCE),
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


def pool_problem(profile: catalog.GpuProfile, driver_version: str) -> str | None:
    """Why ACK cannot run this pool, or None.

    ACK lists the GPU compute families ("gn, ebm and scc series", heterogeneous computing
    overview, document 422806) and only datacenter (Tesla) drivers; no ACK page names a vGPU
    family or a GRID driver, so vGPU pools are refused (an inference from those lists).
    """
    if profile.driver != catalog.TESLA:
        return (
            f"{profile.family} is a vGPU family (GRID driver); ACK lists GPU compute families (gn, ebmgn) and "
            "datacenter drivers only. Fix: use a compute family such as ecs.gn6i-c4g1.xlarge, or "
            "gpu-k8s:cluster kubeadm for vGPU."
        )
    if driver_version not in DRIVER_VERSIONS:
        return f"ACK does not offer driver {driver_version} ({FACTS_DATE})."
    return None


# The GPU checks run on this machine on ACK (components/scripts/local/with-kubeconfig.sh and
# 70/80): kubectl, GNU timeout, python3 and bash 4 (associative arrays). Checked when the
# program starts, before anything is created; the offline harness turns it off.
CHECK_DEPLOYER_TOOLS = True
DEPLOYER_TOOLS = ("kubectl", "timeout", "python3")


def _bash_major() -> int | None:
    try:
        out = subprocess.run(["bash", "-c", "echo ${BASH_VERSINFO[0]}"], capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def missing_deployer_tools(
    which: Callable[[str], str | None] = shutil.which, bash_major: Callable[[], int | None] = _bash_major
) -> list[str]:
    """What this machine lacks to run the GPU checks against ACK (pure with the callables given)."""
    missing = [tool for tool in DEPLOYER_TOOLS if which(tool) is None]
    major = bash_major()
    if major is None or major < 4:
        missing.append(f"bash 4 or newer (found {major or 'none'})")
    return missing
