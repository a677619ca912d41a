"""ACK-backend keys: the managed cluster's spec, version and driver, and the node pools ACK can run."""

from __future__ import annotations

from decimal import Decimal

import pulumi

from components.config.aliyun import in_mainland_china, parse_ttl_hours
from components.config.errors import ConfigError
from components.config.model import AckSettings, NodePool
from components.config.values import choice
from components.facts import ack as ack_facts


def parse_ack(cfg: pulumi.Config, pools: tuple[NodePool, ...], region: str = "") -> AckSettings:
    """The ack* keys, and the node pools ACK can run (refused before anything is created)."""
    missing = ack_facts.missing_deployer_tools() if ack_facts.CHECK_DEPLOYER_TOOLS else []
    if missing:
        raise ConfigError(
            "cluster",
            "ack",
            "kubectl, GNU timeout, python3 and bash 4+ on this machine with gpu-k8s:cluster ack",
            reason=f"on ACK the GPU checks run kubectl here (no SSH to a node); missing: {', '.join(missing)}. "
            "Fix: install them (kubectl of the cluster's minor version), or use gpu-k8s:cluster kubeadm.",
        )
    spec = choice("ackClusterSpec", cfg.get("ackClusterSpec") or "", tuple(ack_facts.CLUSTER_SPECS))
    nodes = sum(p.count for p in pools)
    if spec == "ack.standard" and nodes > ack_facts.BASIC_MAX_NODES:
        raise ConfigError(
            "ackClusterSpec",
            spec,
            f"ack.pro.small for more than {ack_facts.BASIC_MAX_NODES} nodes, or at most {ack_facts.BASIC_MAX_NODES} nodes",
            reason=f"ACK Basic allows {ack_facts.BASIC_MAX_NODES} worker nodes per cluster (no quota increase); "
            f"the node pools ask for {nodes}.",
        )
    version = cfg.get("ackKubernetesVersion") or ""
    status, why = ack_facts.check_kubernetes_version(version)
    if status == "refused":
        raise ConfigError("ackKubernetesVersion", version, ack_facts.VERSION_ACCEPTED, reason=why)
    if status == "newer":
        pulumi.log.warn(why)
    driver = cfg.get("ackNvidiaDriverVersion") or ""
    if driver not in ack_facts.DRIVER_VERSIONS:
        raise ConfigError(
            "ackNvidiaDriverVersion",
            driver,
            f"a driver ACK offers: {', '.join(ack_facts.DRIVER_VERSIONS)}",
            reason=f"ACK installs its default instead of a version it does not list, silently ({ack_facts.FACTS_DATE}).",
        )
    try:
        ttl: Decimal | None = parse_ttl_hours(cfg.get("ttlHours") or "")
    except ConfigError:
        ttl = None  # not a number, or outside kubeadm's range: say ACK's range
    if ttl is None or (ttl != 0 and not ack_facts.MIN_TTL_HOURS <= ttl <= ack_facts.MAX_TTL_HOURS):
        raise ConfigError(
            "ttlHours",
            cfg.get("ttlHours") or "",
            f"0 (off) or {ack_facts.MIN_TTL_HOURS} to {ack_facts.MAX_TTL_HOURS} hours with gpu-k8s:cluster ack",
            reason="on ACK the TTL is an ESS scheduled task, made after the cluster (about 15 min) and the node pools; "
            "it must start in the future and at most 90 days after it is made.",
        )
    image_type = ack_facts.gpu_image_type(version)
    if image_type == ack_facts.IMAGE_TYPE_CGROUP_V2:
        pulumi.log.warn(
            f"gpu-k8s:ackKubernetesVersion {version}: the node pools use {image_type} (ACK's kubelet needs cgroup v2 from "
            "1.35); that ACK installs its GPU driver on that image is unverified: if the GPU test finds no driver, the "
            "nodes' setup is ACK's (README 'kubeadm or ACK?')."
        )
    if ttl:
        pulumi.log.warn(
            f"gpu-k8s:ttlHours {ttl} on ACK is BEST-EFFORT: ACK documents no scheduled node-pool scaling, and the ESS task "
            "that sets each pool to 0 edits a scaling group ACK manages (ACK warns this can make the pool behave "
            "unpredictably). `make down` is what surely stops the meter; the cluster fee, CLB and EIP bill until then."
        )
    if in_mainland_china(region):
        pulumi.log.warn(
            f"{region} is in mainland China, where nvcr.io and docker.io are often unreachable: on ACK the GPU test image "
            "(gpu-k8s:smokeTestImage: e.g. a copy in your ACR) and, with gpu-k8s:monitoring, dcgm-exporter and Prometheus "
            "come from them (gpu-k8s:registryMirrors is kubeadm-only). If pulls fail, use an ACR copy or monitoring none."
        )
    for pool in pools:
        problem = ack_facts.pool_problem(pool.profile, driver)
        if problem:
            key = "nodePools" if cfg.get("nodePools") not in (None, "", "[]") else "instanceType"
            raise ConfigError(key, pool.instance_type, ack_facts.FAMILIES_ACCEPTED, reason=problem)
    return AckSettings(
        cluster_spec=spec,
        kubernetes_version=version,
        driver_version=driver,
    )
