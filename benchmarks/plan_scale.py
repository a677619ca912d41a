"""How the offline plan grows with the node count (a benchmark, not a test).

    python -m benchmarks.plan_scale [--sizes 1,8,32,64] [--repeat 3]

For each size it runs the real program under the mocks in a fresh process and
prints: resources created, wall time (best of --repeat), peak RSS, and the bootstrap
critical path: the longest chain of remote commands in the dependency graph. Targets
(issue 6): the critical path does not grow with the node count, and the 64-node plan
takes under 10x the 1-node plan.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import cache

from tools.harness import ROOT, Resource, run_program

REMOTE = "command:remote:Command"
JOIN_STEP = 2  # join-token (control plane) + kubeadm-join (worker)


def critical_path(resources: list[Resource]) -> tuple[int, list[str]]:
    """Longest chain of remote commands (count, names) through the dependency DAG."""
    by_urn = {r.urn: r for r in resources}

    @cache
    def longest(urn: str) -> tuple[int, tuple[str, ...]]:
        r = by_urn[urn]
        best: tuple[int, tuple[str, ...]] = (0, ())
        for dep in r.dependencies:
            if dep in by_urn:
                best = max(best, longest(dep))
        if r.type == REMOTE:
            return best[0] + 1, (*best[1], r.name)
        return best

    sys.setrecursionlimit(10_000)
    count, names = max((longest(r.urn) for r in resources), default=(0, ()))
    return count, list(names)


def measure_one(nodes: int) -> dict:
    started = time.perf_counter()
    run = run_program("dev", {"gpu-k8s:nodeCount": str(nodes)})
    seconds = time.perf_counter() - started
    length, chain = critical_path(run.resources)
    return {
        "nodes": nodes,
        "resources": len(run.resources),
        "remote_commands": len(run.of_type(REMOTE)),
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "critical_path": length,
        "critical_chain": chain,
    }


def measure(nodes: int, repeat: int) -> dict:
    """Best of `repeat` fresh processes (import time excluded from `seconds`)."""
    runs = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.plan_scale", "--one", str(nodes)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(proc.stdout))
    return min(runs, key=lambda r: r["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan_scale")
    parser.add_argument("--sizes", default="1,8,32,64")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return 0
    rows = [measure(int(n), args.repeat) for n in args.sizes.split(",")]
    print(f"{'nodes':>5} {'resources':>9} {'remote cmds':>11} {'plan s':>7} {'peak RSS MiB':>12} {'critical path':>13}")
    for r in rows:
        print(
            f"{r['nodes']:>5} {r['resources']:>9} {r['remote_commands']:>11} {r['seconds']:>7.2f}"
            f" {r['peak_rss_mib']:>12.1f} {r['critical_path']:>13}"
        )
    base = rows[0]
    print(f"\ncritical chain at {rows[-1]['nodes']} nodes: {' -> '.join(rows[-1]['critical_chain'])}")
    ratio = rows[-1]["seconds"] / base["seconds"] if base["seconds"] else float("inf")
    # With workers the chain gains exactly the join step: refresh the join token on the
    # control plane, then kubeadm join on the worker. It must not grow beyond that.
    multi = [r for r in rows if r["nodes"] > 1]
    path_ok = all(r["critical_path"] <= base["critical_path"] + JOIN_STEP for r in multi) and (
        len({r["critical_path"] for r in multi}) <= 1
    )
    print(
        f"plan time {rows[-1]['nodes']} vs {base['nodes']} nodes: {ratio:.1f}x (target < 10x): {'ok' if ratio < 10 else 'MISSED'}"
    )
    print(
        f"critical path constant for 2+ nodes and <= 1-node + join step ({JOIN_STEP} commands): {'ok' if path_ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
