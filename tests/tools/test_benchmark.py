"""The benchmark's critical-path measure, and the property it reports: joins in parallel."""

from helpers import shipped

from benchmarks.plan_scale import JOIN_STEP, critical_path
from tools.harness import Resource, run_program


def res(name: str, deps: list[str], typ: str = "command:remote:Command") -> Resource:
    return Resource(urn=name, type=typ, name=name, parent="", provider="", dependencies=deps, inputs={}, outputs={}, custom=True)


def test_critical_path_counts_only_remote_commands_on_the_longest_chain():
    graph = [
        res("a", []),
        res("copy", ["a"], "command:remote:CopyToRemote"),
        res("b", ["copy"]),
        res("c", ["b"]),
        res("side", ["a"]),
        res("k8s", ["c"], "kubernetes:core/v1:Pod"),
        res("d", ["k8s", "side"]),
    ]
    assert critical_path(graph) == (4, ["a", "b", "c", "d"])


def test_adding_workers_adds_the_join_step_once_not_per_node():
    one = critical_path(shipped("p4").resources)[0]
    three = critical_path(run_program("p4", {"gpu-k8s:nodeCount": "3"}).resources)[0]
    six = critical_path(run_program("p4", {"gpu-k8s:nodeCount": "6"}).resources)[0]
    assert three == six == one + JOIN_STEP
