"""The per-node verdict table (`gpuNodes` output): node, pool, GPU, driver, allocatable, test."""

from __future__ import annotations

import pulumi


def node_rows(nodes: list[dict], detected: dict[str, dict], allocatable: dict, result: dict) -> list[dict]:
    """Join what each source knows about a node into one row per GPU node (pure)."""
    by_node: dict[str, list[dict]] = {}
    for pod in result.get("pods") or []:
        by_node.setdefault(pod.get("node", ""), []).append(pod)
    rows = []
    for node in nodes:
        name = node["name"]
        pods = by_node.get(name, [])
        if not pods:
            test = "SKIPPED" if result.get("verdict") == "SKIPPED" else "NOT RUN"
        else:
            test = "PASSED" if all(p.get("passed") for p in pods) else "FAILED"
        rows.append(
            {
                "node": name,
                "pool": node["pool"],
                "gpu": detected.get(name, {}).get("gpu", "unknown"),
                "driver": f"{node['driver']} {detected.get(name, {}).get('driverVersion', '')}".strip(),
                "allocatableGpus": allocatable.get(name),
                "test": test,
            }
        )
    return rows


def gpu_node_table(fleet, cluster, smoke) -> pulumi.Output[list[dict]]:
    nodes = [{"name": n.hostname, "pool": n.args.pool, "driver": n.profile.driver} for n in fleet.nodes if n.profile is not None]
    return pulumi.Output.all(cluster.detected_gpus(), smoke.allocatable, smoke.result).apply(
        lambda parts: node_rows(nodes, parts[0], parts[1] or {}, parts[2] or {})
    )
