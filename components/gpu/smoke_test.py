"""GPU smoke test: is nvidia.com/gpu allocatable on every GPU node, and does a GPU pod work?

Three steps, in order (the seed walk-through's checks, automated):
 1. ``70-gpu-allocatable.sh`` waits until every GPU node advertises nvidia.com/gpu, and
    otherwise prints a diagnosis from the device plugin's pods.
 2. Test pods, one per GPU node (N per node with time-slicing), each limited to
    exactly 1 nvidia.com/gpu: the CUDA vectoradd sample ("Test PASSED"), or the seed's
    TensorFlow script ("/device:GPU:0") mounted from a ConfigMap.
 3. ``80-gpu-test-result.sh`` waits for the pods to finish and reports, as JSON, the
    phase, log and a diagnosis per pod; a passed test becomes the ``result`` output. A
    FAILED or TIMEOUT verdict makes the script exit non-zero after printing one line per
    failed pod with its cause: the remote command fails, so ``pulumi up`` fails with that
    text, and a failed create is not recorded in state, so the next ``up`` checks again
    (shared/reference/replacement-semantics.md section 2). ``pulumi.log.error`` alone
    would not do: it leaves the exit status 0 (pulumi/pulumi#5085).

The checks read pod status and logs through the Kubernetes API with kubectl, wherever the
backend runs them (``ClusterChecks``: on the kubeadm control plane over SSH, or on the
deployer with the ACK kubeconfig); nothing here needs SSH to a GPU node. A pod is pinned to
its node by hostname where the backend names the nodes (kubeadm); where the cloud names
them (ACK) it selects its node pool's label, and a required anti-affinity puts each of a
pool's test pods on a different node.

The pods skip Pulumi's await: a failed pod would otherwise hold ``pulumi up`` for ten
minutes and then print less than step 3 does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import backend
from components.backend import ClusterChecks, GpuNode
from components.config import DNS_LABEL_RE, IMAGE_REF_RE, SMOKE_TESTS
from components.facts import cuda
from components.facts.catalog import GpuProfile
from components.gpu import device_plugin

TESTS = SMOKE_TESTS
SUCCESS_PATTERNS = {"vectoradd": "Test PASSED", "tensorflow": "/device:GPU:0"}
NAMESPACE = "default"
POD_PREFIX = "gpu-test"
SCRIPT_CONFIG_MAP = "gpu-test-script"
# The seed's test: prints the GPU's device name, empty when TensorFlow sees no GPU.
TENSORFLOW_SCRIPT = "import tensorflow as tf\nprint(tf.test.gpu_device_name())\n"
RESULT_TIMEOUT_SECONDS = 900
MAX_REPLICAS = device_plugin.MAX_REPLICAS
MAX_LOG_CHARS = 4000  # per pod in the stack output; the tail is what explains a failure
VERDICTS = ("PASSED", "FAILED", "TIMEOUT")  # 80-gpu-test-result.sh's exit 0, 2, 3


class GpuTestFailed(pulumi.RunError):
    """The result check reported no PASSED verdict: ``pulumi up`` must fail with the diagnosis."""


# Test pods of one node group (ACK node pool) carry this label; anti-affinity spreads them.
SPREAD_LABEL = "gpu-k8s/gpu-test-group"


@dataclass(frozen=True, kw_only=True)
class GpuSmokeTestArgs:
    checks: ClusterChecks  # how kubectl reaches the cluster (backend.py)
    gpu_nodes: Sequence[GpuNode]  # or plain (node_name, GpuProfile, driver_version[, selector]) tuples
    test: str = "vectoradd"  # vectoradd | tensorflow | none
    image: str | None = None  # replaces the test's default image
    image_cuda_version: str | None = None  # CUDA the image needs, when it isn't a known image
    time_slicing_replicas: int = 1  # N > 1: N test pods per node share its GPU(s)
    gpu_resource: str = device_plugin.GPU_RESOURCE  # what a test pod requests (nvidia.com/gpu.shared when renamed)
    run: str = ""  # gpu-k8s:gpuTestRun: a new value is a new set of test pods (make retest)
    # Cluster-wide facts the test verifies besides each node's (GpuNode.verifies), e.g. the
    # device plugin's image and config: a change runs the test again.
    verifies: Sequence[pulumi.Input[str]] = ()
    device_plugin: Sequence[pulumi.Resource] = ()  # the plugin DaemonSet(s): checked after them
    after: Sequence[pulumi.Resource] = ()  # e.g. the GPU node label patches

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"GpuSmokeTestArgs.test {self.test!r}: expected one of {', '.join(TESTS)}")
        nodes = [GpuNode(*n) for n in self.gpu_nodes]
        if not nodes:
            raise ValueError("GpuSmokeTestArgs.gpu_nodes must name at least one GPU node")
        names = [n.name for n in nodes]
        if any(not n.pinned for n in nodes) and self.time_slicing_replicas > 1:
            raise ValueError("GpuSmokeTestArgs.time_slicing_replicas > 1 needs nodes pinned by name (kubeadm)")
        for node in nodes:
            if not DNS_LABEL_RE.match(node.name):
                raise ValueError(f"GpuSmokeTestArgs.gpu_nodes: {node.name!r} is not a Kubernetes node name (DNS label)")
            if not isinstance(node.profile, GpuProfile):
                raise ValueError(f"GpuSmokeTestArgs.gpu_nodes: {node.name!r} has no GpuProfile")
            cuda.driver_cuda(node.driver_version)  # raises ValueError on a malformed version
        if len(set(names)) != len(names):
            raise ValueError(f"GpuSmokeTestArgs.gpu_nodes: node names repeat: {', '.join(names)}")
        if isinstance(self.time_slicing_replicas, bool) or not 1 <= self.time_slicing_replicas <= MAX_REPLICAS:
            raise ValueError(
                f"GpuSmokeTestArgs.time_slicing_replicas {self.time_slicing_replicas!r}: expected 1 to {MAX_REPLICAS}"
            )
        if self.image is not None and not IMAGE_REF_RE.match(self.image):
            raise ValueError(f"GpuSmokeTestArgs.image {self.image!r} is not an image reference such as repo/name:tag")
        if self.test != "none":
            # CudaIncompatible (a ValueError) names image, CUDA, driver and a fix.
            cuda.select_test_image(self.test, self.image, self.image_cuda_version, _drivers(nodes))
        object.__setattr__(self, "gpu_nodes", tuple(nodes))


def _drivers(nodes: Sequence[GpuNode]) -> list[tuple[str, str]]:
    return [(n.driver_version, n.profile.driver) for n in nodes]


def spec_hash(spec: dict) -> str:
    """6 hex of the pod spec: a changed spec is a new pod name."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:6]


def _pod_name(node: str, suffix: str) -> str:
    """gpu-test-<node>[-<i>]-<hash>, a DNS label (<= 63): a long node name is cut, the rest kept."""
    room = 63 - len(POD_PREFIX) - 2 - len(suffix)
    return f"{POD_PREFIX}-{node[:room].rstrip('-')}-{suffix}"


def _test_pods(
    nodes: Sequence[GpuNode],
    replicas: int,
    specs: dict[str, dict] | None = None,
    run: str = "",
    verified: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(pod name, node name) pairs: one pod per node, or N per node when time-slicing.

    The name ends in a hash of the pod's spec (``specs``, per node), of ``run``
    (gpu-k8s:gpuTestRun, which `make retest` sets), of what the test verifies there
    (``verified``, per node: GpuNode.verifies with the cluster-wide facts) and for a node
    group (ACK) of the group's size: a new spec, run, node, driver, runtime, plugin or pool
    size is a new name, so a replaced test pod never waits for the old one of the same name
    to go (skipAwait skips the delete wait too, reference §3), and TEST_PODS changes with
    it, so the result check runs again: a verdict never outlives what it tested.
    """
    groups = backend.gpu_node_groups(nodes)

    def hashed(n: GpuNode) -> dict:
        spec = (specs or {}).get(n.name, {})
        out = {"spec": spec, "run": run, "verifies": (verified or {}).get(n.name, "")}
        if not n.pinned:
            # A group's pods go to whichever nodes its pool has: a new pool size is a new set of
            # pods (a pod whose node the pool removed is gone, and its result with it).
            out["groupSize"] = groups[n.group]
        return out

    tag = {n.name: spec_hash(hashed(n)) for n in nodes}
    if replicas == 1:
        return [(_pod_name(n.name, tag[n.name]), n.name) for n in nodes]
    return [(_pod_name(n.name, f"{i}-{tag[n.name]}"), n.name) for n in nodes for i in range(replicas)]


def _pod_spec(
    test: str,
    image: str,
    node: str,
    selector: tuple[tuple[str, str], ...] = (),
    resource: str = device_plugin.GPU_RESOURCE,
) -> dict:
    """The pod's spec on ``node`` (pinned by hostname), or on one node of a group (``selector``)."""
    container: dict = {
        "name": POD_PREFIX,
        "image": image,
        # Exactly one GPU (or one time-slice of it): more would make the test unschedulable.
        "resources": {"limits": {resource: "1"}},
    }
    spec: dict = {
        "restartPolicy": "Never",
        "nodeSelector": dict(selector) if selector else {backend.HOSTNAME_LABEL: node},
        "tolerations": [{"key": device_plugin.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [container],
    }
    if test == "tensorflow":
        container["command"] = ["python3", "/app/test.py"]
        # TensorFlow reserves (nearly) all GPU memory per process by default; with
        # time-slicing N test pods share one GPU, so each takes only what it uses
        # (tensorflow.org/guide/gpu "Limiting GPU memory growth"). Harmless with one pod.
        container["env"] = [{"name": "TF_FORCE_GPU_ALLOW_GROWTH", "value": "true"}]
        container["volumeMounts"] = [{"name": SCRIPT_CONFIG_MAP, "mountPath": "/app/"}]
        spec["volumes"] = [{"name": SCRIPT_CONFIG_MAP, "configMap": {"name": SCRIPT_CONFIG_MAP}}]
    if selector:
        # One test pod per node of the group: no two pods with this group's label on a node.
        group = _group_name(selector)
        spec["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {SPREAD_LABEL: group}},
                        "topologyKey": backend.HOSTNAME_LABEL,
                    }
                ]
            }
        }
    # vectoradd: the image's own entrypoint runs /cuda-samples/vectorAdd.
    return spec


def _group_name(selector: tuple[tuple[str, str], ...]) -> str:
    """A label value naming a node group: its selector's values, e.g. the pool name."""
    return "-".join(v for _, v in selector)[:63].strip("-.")


def _parse_allocatable(stdout: str) -> dict:
    try:
        data = json.loads(stdout or "")
    except json.JSONDecodeError:
        return {"unreadable": (stdout or "")[-MAX_LOG_CHARS:]}
    return data if isinstance(data, dict) else {"unreadable": stdout[-MAX_LOG_CHARS:]}


def _verdict(
    stdout: str,
    pods: Sequence[tuple[str, str]],
    *,
    test: str,
    image: str,
    cuda_version: str,
    pattern: str,
    pinned: bool = True,
) -> dict:
    """The result output from 80-gpu-test-result.sh's JSON; PASSED only if every pod passed.

    ``pinned``: each pod's node is the one it names (nodeSelector hostname); otherwise the
    pod names a slot of a node group and the node is the one the script reports.
    """
    try:
        data = json.loads(stdout or "")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("pods"), list):
        reported: dict[str, dict] = {}
        unreadable = f"the result check printed no result JSON: {(stdout or '<nothing>')[-MAX_LOG_CHARS:]}"
    else:
        # The script names pods namespace/name.
        reported = {str(p.get("pod")).rsplit("/", 1)[-1]: p for p in data["pods"] if isinstance(p, dict)}
        unreadable = ""
    entries = []
    for pod, node in pods:
        got = reported.get(pod)
        if got is None:
            entries.append(
                {
                    "pod": pod,
                    "node": node,
                    "phase": "Unknown",
                    "passed": False,
                    "log": "",
                    "diagnosis": unreadable or "the result check did not report this pod",
                    **({} if pinned else {"slot": node}),
                }
            )
            continue
        entries.append(
            {
                "pod": pod,
                # Pinned by nodeSelector: authoritative. In a group: where the scheduler put it.
                "node": node if pinned else str(got.get("node") or f"(not scheduled: slot {node})"),
                **({} if pinned else {"slot": node}),
                "phase": str(got.get("phase") or "Unknown"),
                "passed": got.get("passed") is True,
                "log": str(got.get("log") or "")[-MAX_LOG_CHARS:],
                "diagnosis": str(got.get("diagnosis") or ""),
            }
        )
    passed = isinstance(data, dict) and data.get("passed") is True and all(e["passed"] for e in entries)
    said = data.get("verdict") if isinstance(data, dict) else None
    return {
        "verdict": "PASSED" if passed else said if said in VERDICTS[1:] else "FAILED",
        # When the check read the verdict (UTC): `make outputs` compares it with the stack's history.
        "checkedAt": str(data.get("checkedAt") or "unknown") if isinstance(data, dict) else "unknown",
        "test": test,
        "image": image,
        "cudaVersion": cuda_version,
        "successPattern": pattern,
        "pods": entries,
    }


def _failure_message(result: dict) -> str:
    lines = [f"GPU smoke test {result['verdict']} ({result['image']}, expecting {result['successPattern']!r} in the log):"]
    for e in result["pods"]:
        if not e["passed"]:
            why = e["diagnosis"] or (f"log tail: {e['log'][-300:]}" if e["log"] else "no diagnosis")
            lines.append(f"  {e['pod']} on {e['node']}: {e['phase']}: {why}")
    return "\n".join(lines)


def _check_env(checks: ClusterChecks) -> dict[str, str]:
    """What both checks need to know about the cluster's device plugin and node setup."""
    env = {
        "PLUGIN_NAMESPACE": checks.plugin_namespace or device_plugin.NAMESPACE,
        "PLUGIN_SELECTOR": checks.plugin_selector or device_plugin.selector(),
    }
    if checks.node_setup != "gpu-k8s":
        env["NODE_SETUP"] = checks.node_setup  # only when not the default: a kubeadm stack's step stays the same
    return env


def _placement_env(nodes: Sequence[GpuNode]) -> dict[str, str]:
    """GPU_NODES (nodes named by us) or GPU_NODE_GROUPS (label=value:count, nodes named by the cloud)."""
    if all(n.pinned for n in nodes):
        return {"GPU_NODES": " ".join(n.name for n in nodes)}
    return {"GPU_NODE_GROUPS": " ".join(f"{sel}:{count}" for sel, count in backend.gpu_node_groups(nodes).items())}


class GpuSmokeTest(pulumi.ComponentResource):
    allocatable_check: pulumi.CustomResource  # a remote or local command (ClusterChecks.run)
    allocatable: pulumi.Output[dict]  # {node: nvidia.com/gpu allocatable}
    config_map: k8s.core.v1.ConfigMap | None  # the TensorFlow script
    pods: list[k8s.core.v1.Pod]
    result_check: pulumi.CustomResource | None
    result: pulumi.Output[dict]  # verdict PASSED|FAILED|SKIPPED, per-pod entries
    image: str | None
    success_pattern: str | None

    def __init__(self, name: str, args: GpuSmokeTestArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:smoke_test:GpuSmokeTest", name, {}, opts)
        nodes: Sequence[GpuNode] = args.gpu_nodes
        replicas = args.time_slicing_replicas
        # What the checks and the test verify, per node and cluster-wide: a change runs them again.
        self.verified: pulumi.Output[dict[str, str]] = pulumi.Output.all(*[n.verifies for n in nodes], *args.verifies).apply(
            lambda parts: {n.name: backend.digest(part, parts[len(nodes) :]) for n, part in zip(nodes, parts, strict=False)}
        )
        self.allocatable_check = args.checks.run(
            f"{name}-gpu-allocatable",
            script="70-gpu-allocatable.sh",
            env={
                **_placement_env(nodes),
                # Time-slicing advertises every GPU N times: at least N per node.
                "MIN_GPUS_PER_NODE": str(replicas),
                **({"GPU_RESOURCE": args.gpu_resource} if args.gpu_resource != device_plugin.GPU_RESOURCE else {}),
                "TIMEOUT_SECONDS": str(args.checks.allocatable_timeout_seconds),
                **_check_env(args.checks),
            },
            after=[*args.device_plugin, *args.after],
            parent=self,
            timeout=f"{args.checks.allocatable_timeout_seconds // 60 + 5}m",
            extra_triggers=[self.verified.apply(backend.digest)],
        )
        # A check run on the deployer reads the kubeconfig from stdin, a secret, and pulumi-command
        # may then mark its stdout secret too; the checks print no credential, only GPU counts,
        # pod phases and logs, which the outputs must show in the clear.
        self.allocatable = pulumi.Output.unsecret(self.allocatable_check.stdout).apply(_parse_allocatable)
        self.config_map, self.pods, self.result_check = None, [], None
        self.image = self.success_pattern = None
        if args.test == "none":
            self.result = pulumi.Output.from_input({"verdict": "SKIPPED", "test": "none", "pods": []})
        else:
            self.result = self._test_workload(name, args)
        self.register_outputs({"allocatable": self.allocatable, "image": self.image, "result": self.result})

    def _test_workload(self, name: str, args: GpuSmokeTestArgs) -> pulumi.Output[dict]:
        """Steps 2 and 3: the test pods, then the result check; returns the result output."""
        nodes: Sequence[GpuNode] = args.gpu_nodes
        replicas = args.time_slicing_replicas
        image, cuda_version = cuda.select_test_image(args.test, args.image, args.image_cuda_version, _drivers(nodes))
        pattern = SUCCESS_PATTERNS[args.test]
        self.image, self.success_pattern = image, pattern
        pod_deps: list[pulumi.Resource] = [self.allocatable_check]
        if args.test == "tensorflow":
            self.config_map = k8s.core.v1.ConfigMap(
                f"{name}-script",
                metadata={"name": SCRIPT_CONFIG_MAP, "namespace": NAMESPACE},
                data={"test.py": TENSORFLOW_SCRIPT},
                opts=pulumi.ResourceOptions(parent=self),
            )
            pod_deps.append(self.config_map)
        specs = {n.name: _pod_spec(args.test, image, n.name, n.selector, args.gpu_resource) for n in nodes}
        groups = {n.name: _group_name(n.selector) for n in nodes if n.selector}
        # The pods' names carry what they verify (an Output: instance ids are known at deploy time).
        pods = self.verified.apply(lambda verified: _test_pods(nodes, replicas, specs, args.run, verified))
        index: dict[str, int] = {}
        for k, (_, node) in enumerate(_test_pods(nodes, replicas, specs, args.run)):
            i = index[node] = index.get(node, -1) + 1
            labels = {"app.kubernetes.io/name": POD_PREFIX, "app.kubernetes.io/part-of": "gpu-k8s"}
            if node in groups:
                labels[SPREAD_LABEL] = groups[node]  # what the group's anti-affinity matches
            self.pods.append(
                k8s.core.v1.Pod(
                    # The resource name stays (make retest's -smoke-pod-); the pod name has the hash.
                    f"{name}-pod-{node}" + (f"-{i}" if replicas > 1 else ""),
                    metadata={
                        "name": pods.apply(lambda ps, k=k: ps[k][0]),
                        "namespace": NAMESPACE,
                        "labels": labels,
                        "annotations": {"pulumi.com/skipAwait": "true"},
                    },
                    spec=specs[node],
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        depends_on=pod_deps,
                        # A finished pod never re-runs: any spec change means a new pod (under
                        # a new name). The old one is deleted first: it may hold the GPU the new
                        # one needs, and the deletes of a create-first replace run only at the
                        # end of the update, after the result check has waited.
                        replace_on_changes=["spec"],
                        delete_before_replace=True,
                    ),
                )
            )
        result_env = {
            "TEST_PODS": pods.apply(lambda ps: " ".join(f"{NAMESPACE}/{pod}" for pod, _ in ps)),
            "PODS_PER_NODE": str(replicas),
            "TEST_IMAGE": image,  # a new image re-runs the check
            "SUCCESS_PATTERN": pattern,
            "TIMEOUT_SECONDS": str(RESULT_TIMEOUT_SECONDS),
        }
        if "NODE_SETUP" in _check_env(args.checks):
            result_env["NODE_SETUP"] = args.checks.node_setup
        self.result_check = args.checks.run(
            f"{name}-gpu-test-result",
            script="80-gpu-test-result.sh",
            env=result_env,
            after=self.pods,
            parent=self,
            timeout="20m",
        )

        def verdict(stdout_and_pods: list) -> dict:
            stdout, tested = stdout_and_pods
            result = _verdict(
                stdout,
                tested,
                test=args.test,
                image=image,
                cuda_version=cuda_version,
                pattern=pattern,
                pinned=all(n.pinned for n in nodes),
            )
            if result["verdict"] != "PASSED":
                # The script exits non-zero on FAILED/TIMEOUT, so a completed check that is
                # not PASSED printed something unreadable (or left a pod out): still fail the
                # run, never record a failure as if the test had passed.
                raise GpuTestFailed(_failure_message(result))
            return result

        # unsecret: see allocatable above
        return pulumi.Output.all(pulumi.Output.unsecret(self.result_check.stdout), pods).apply(verdict)
