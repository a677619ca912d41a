"""The per-node verdict table (`gpuNodes` output): node, pool, GPU, driver, allocatable, test."""

from __future__ import annotations

import pulumi


def node_rows(
    nodes: list[dict], detected: dict[str, dict], allocatable: dict, result: dict, feature_labels: tuple[str, ...] = ()
) -> list[dict]:
    """Join what each source knows about a node into one row per GPU node (pure).

    ``nodes``: {name, pool, driver} per GPU node, where ``name`` is the node's name or, on a
    backend whose cloud names the nodes (ACK), a slot of its pool; test entries name their
    slot there (``slot``) and the real node in ``node``.
    """
    by_node: dict[str, list[dict]] = {}
    for pod in result.get("pods") or []:
        by_node.setdefault(pod.get("slot") or pod.get("node", ""), []).append(pod)
    rows = []
    for node in nodes:
        name = node["name"]
        pods = by_node.get(name, [])
        if not pods:
            test = "SKIPPED" if result.get("verdict") == "SKIPPED" else "NOT RUN"
        else:
            test = "PASSED" if all(p.get("passed") for p in pods) else "FAILED"
        real = pods[0].get("node", name) if pods and pods[0].get("slot") else name
        rows.append(
            {
                "node": real,
                "pool": node["pool"],
                "gpu": detected.get(name, {}).get("gpu", "unknown"),
                "driver": f"{node['driver']} {detected.get(name, {}).get('driverVersion', '')}".strip(),
                "allocatableGpus": allocatable.get(real),
                "test": test,
            }
        )
        if feature_labels:
            # GPU Feature Discovery labels the node shortly after its pod starts; read them live.
            rows[-1]["featureLabels"] = f"kubectl get node {real} -L {','.join(feature_labels)}"
    return rows


def gpu_node_table(cluster, smoke, feature_labels: tuple[str, ...] = ()) -> pulumi.Output[list[dict]]:
    """The rows for every GPU node of the cluster (any backend: components/backend.py)."""
    nodes = [{"name": n.name, "pool": n.pool, "driver": n.profile.driver} for n in cluster.gpu_nodes()]
    return pulumi.Output.all(cluster.detected_gpus(), smoke.allocatable, smoke.result).apply(
        lambda parts: node_rows(nodes, parts[0], parts[1] or {}, parts[2] or {}, feature_labels)
    )
