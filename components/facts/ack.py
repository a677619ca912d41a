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
# by ACK", updated 2026-10-06; the 1.36 notes (2026-06-06): 1.36.1-aliyun.1, containerd 2.1.6;
# the 1.35 notes (2026-08-26): 1.35.1, 1.35.2 and 1.35.7-aliyun.1, containerd 2.1.6 (2.1.5 in the
# first); 1.36.2-aliyun.1 and 1.35.7 as ACK's API listed them on 2026-09-14 (cloud-barista/
# cb-tumblebug PR #2776)). tools/fixtures/ack-kubernetes-versions.json (the offline API answer)
# lists the same. ACK keeps adding patches: a well-formed version of a supported minor that is
# not listed is planned with a warning (ACK's CreateCluster is the judge), not refused.
KUBERNETES_VERSIONS = ("1.36.2-aliyun.1", "1.36.1-aliyun.1", "1.35.7-aliyun.1", "1.35.2-aliyun.1", "1.35.1-aliyun.1")
_VERSION_RE = re.compile(r"^1\.(\d{2})\.(\d{1,2})-aliyun\.(\d{1,2})$")
VERSION_ACCEPTED = f"an ACK Kubernetes version MAJOR.MINOR.PATCH-aliyun.N of a supported minor, e.g. {KUBERNETES_VERSIONS[0]}"
# End of ACK support per minor (same page): a minor past it cannot be created.
END_OF_SUPPORT = {
    "1.36": "2027-05-30",
    "1.35": "2027-02-28",
    "1.34": "2026-09-30",
    "1.33": "2026-05-31",
    "1.32": "2026-01-31",
    "1.31": "2025-09-30",
    "1.30": "2026-06-30",
}
# The node pools' OS image per minor. From 1.35 the kubelet "refuses to start on nodes that
# use cgroup v1" (ACK 1.35 release notes, doc-detail/3021327, 2026-03-25). Alibaba Cloud Linux 3
# container-optimized "uses control group (cgroup) v2" (Alibaba Cloud Linux docs); ACK's plain
# AliyunLinux3 image is cgroup v1 by default (ACK documents building cgroup v2 nodes from a
# custom image). Unverified: that ACK installs its GPU driver on the container-optimized image
# (no ACK page says either way; ContainerOS, another image, is documented as not for GPU nodes).
IMAGE_TYPE_BEFORE_CGROUP_V2 = "AliyunLinux3"
IMAGE_TYPE_CGROUP_V2 = "AliyunLinux3ContainerOptimized"
FIRST_CGROUP_V2_MINOR = 35


def gpu_image_type(kubernetes_version: str) -> str:
    """The node pools' image_type for an ACK version (pure)."""
    m = _VERSION_RE.match(kubernetes_version)
    minor = int(m.group(1)) if m else FIRST_CGROUP_V2_MINOR
    return IMAGE_TYPE_CGROUP_V2 if minor >= FIRST_CGROUP_V2_MINOR else IMAGE_TYPE_BEFORE_CGROUP_V2


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

_PRO_FEE_SOURCE = (
    "ACK Pro cluster management fee, CNY 0.64 per cluster-hour (Aliyun's ACK solution cost tables; "
    "USD 0.09 on the ACK Pro billing page, 2026-03-26)"
)
_CLB_SOURCE = (
    "API server CLB (internal, pay-by-usage) instance fee, CNY 0.147/h (CLB pay-as-you-go billing page); "
    "its capacity units (LCU) are billed by use and not included"
)
# The public API endpoint is an EIP bound to that internal CLB (ACK, "Access the API server from
# the public network", 2026-02-27); an EIP bound to a CLB still pays its configuration fee.
_API_EIP_SOURCE = (
    "API server EIP configuration fee, CNY 0.02/h, pay-by-traffic, traffic CNY 0.8/GB extra (Aliyun's ACK "
    "solution cost tables; the EIP page: the fee is not waived when bound to a CLB)"
)
# Hourly fees in CNY beside the nodes, which the node pools' TTL does not stop: name -> (price, source).
_FEES: dict[str, dict[str, tuple[Decimal, str]]] = {
    "ack.pro.small": {
        "cluster management fee (ACK Pro)": (Decimal("0.64"), _PRO_FEE_SOURCE),
        "API server load balancer (CLB)": (Decimal("0.147"), _CLB_SOURCE),
        "API server public endpoint (EIP)": (Decimal("0.02"), _API_EIP_SOURCE),
    },
    "ack.standard": {
        "API server load balancer (CLB)": (Decimal("0.147"), _CLB_SOURCE),
        "API server public endpoint (EIP)": (Decimal("0.02"), _API_EIP_SOURCE),
    },
}

# A NAT gateway ACK may make. The program asks for none (new_nat_gateway=False), but the
# provider never sends false (terraform-provider-alicloud resource_alicloud_cs_managed_kubernetes.go
# reads it with d.GetOk, which treats false as unset), so ACK's CreateCluster default for
# snat_entry decides: documented "true" until 2026-01, "false" since 2026-06
# (alibabacloud-go-sdk cs-20151215 create_cluster_request_model.go history). The program
# looks for one in the stack's VPC after the cluster exists and prices it when found. ACK
# deletes what it made with the cluster (DeleteCluster; the provider's docs: "NAT gateways,
# SNAT rules, SLB instances ... will be deleted" unless in retain_resources, which is empty here).
NAT_GATEWAY_FEE = (
    "NAT gateway made by ACK, with its EIP",
    Decimal("0.215"),
    "NAT gateway (enhanced, pay-as-you-go) instance CNY 0.195/h + its EIP CNY 0.02/h; capacity units CNY 0.195/CU "
    "billed by use and not included (Aliyun's ACK solution cost tables)",
)


def cluster_fees(spec: str) -> dict[str, tuple[Decimal, str]]:
    return dict(_FEES[spec])


def check_kubernetes_version(version: str) -> tuple[str, str]:
    """("known"|"newer"|"refused", why): listed, well-formed but not listed (warn), or refused."""
    m = _VERSION_RE.match(version)
    if not m:
        return "refused", "it is not an ACK version string MAJOR.MINOR.PATCH-aliyun.N."
    minor = f"1.{int(m.group(1))}"
    if version in KUBERNETES_VERSIONS:
        return "known", ""
    newest_minor = max(END_OF_SUPPORT, key=lambda v: int(v.split(".")[1]))
    ended = END_OF_SUPPORT.get(minor)
    if (ended and ended <= FACTS_DATE) or (not ended and int(m.group(1)) < int(newest_minor.split(".")[1])):
        return "refused", f"ACK {minor} is out of support (end of support {ended or 'before 1.30'}; ACK's list of {FACTS_DATE})."
    if int(m.group(1)) > int(newest_minor.split(".")[1]) + 1:
        # One minor past ACK's newest may have come since the list's date; more cannot have.
        return "refused", f"ACK offers {newest_minor} at most ({FACTS_DATE}); {minor} cannot be out yet."
    return "newer", (
        f"gpu-k8s:ackKubernetesVersion {version} is not in ACK's version list of {FACTS_DATE} "
        f"({', '.join(KUBERNETES_VERSIONS)}); ACK refuses the cluster at create time if it does not offer it."
    )


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
