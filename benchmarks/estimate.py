"""Minutes to GPU-ready, estimated offline: the plan's dependency graph weighted by a documented table.

    python -m benchmarks.estimate [--stack dev] [--json]        (make estimate STACK=dev)

The graph is the real program under the mocks (tools/harness.run_program): every resource
with its dependencies (a Kubernetes object also waits for the provider and its parent
component's dependencies). Each resource gets work from TABLE: seconds of CPU/install time,
and bytes to download on a node. Downloads of one node share its public bandwidth (the
stack's publicBandwidthMbps, the ECS cap): they pass through one pipe per node in the order
they are asked for, so parallel steps never download faster than the cap together.
Images are pulled where the manifests place them (flannel on every node, the device plugin
after the node's labels, the exporter on its pools, the test pod on its node); an image the
node's prefetch-images step has finished pulling costs nothing more. The estimate is the
finish time of the GPU test result, and the critical path is the chain that set it.

``--no-prefetch`` (and the second column printed by default) is the same graph with the
prefetch-images steps left out: the kubelet and kubeadm then pull everything themselves.
``fromBakedImage`` is the same graph for nodes that boot from gpu-k8s:nodeImage bake's images:
a custom image boots like a stock one (Aliyun publishes no difference: the stock figure), the
driver, runtime and package steps take their skip paths, and the baked images are on the node
already; with the builder's minutes on the first `up` (it starts once the stock cluster's GPU test passed).
The seed's manual path (week049: CUDA 12.2 local installer, Docker, kubeadm, flannel, device
plugin v0.14.3, the TF 2.6.0-gpu pod) is the sum of its steps, one after another.

Every TABLE entry has a source or is marked ASSUMPTION (not measured here: this machine has
no registry or NVIDIA access); numbers are rounded, and deterministic.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from dataclasses import dataclass

from tools.harness import Resource, reveal, run_program
from tools.mocks import command_env

MB = 1_000_000
ASSUMPTION = "ASSUMPTION (not measured: no registry/NVIDIA access from the build machine)"


@dataclass(frozen=True)
class Entry:
    seconds: float = 0.0  # CPU / install / wait time
    mb: float = 0.0  # compressed download, MB
    source: str = ASSUMPTION


# Work per resource kind and per step (a node step by its role, the name's suffix).
TABLE: dict[str, Entry] = {
    "instance": Entry(60, 0, "ASSUMPTION: Aliyun ECS create-to-Running for a pay-as-you-go GPU instance, ~1 min"),
    "wait-boot": Entry(45, 0, "ASSUMPTION: cloud-init on first boot of Ubuntu 22.04, apt lock released"),
    "driver-prepare/tesla": Entry(
        40, 75, "ASSUMPTION: gcc, make, dkms, linux-headers (apt 'Need to get' ~75 MB) + update-initramfs"
    ),
    "driver-prepare/grid": Entry(20, 0, "ASSUMPTION: blacklist + update-initramfs only"),
    "settle": Entry(0, 0, "components/kubeadm/bootstrap.py: 'true' unless nouveau forced a reboot (then +60 s sleep + reboot)"),
    "nvidia-driver/tesla": Entry(
        150, 330, "ASSUMPTION: NVIDIA-Linux-x86_64-535.*.run ~330 MB; DKMS build of nvidia.ko ~2.5 min on 4 vCPU"
    ),
    "nvidia-driver/grid": Entry(180, 420, "ASSUMPTION: Aliyun acs-plugin-manager GRID driver package ~420 MB + install"),
    "gpu-verify": Entry(5, 0, "12-gpu-verify: one nvidia-smi query"),
    "container-runtime": Entry(45, 70, "ASSUMPTION: containerd + nvidia-container-toolkit (4 packages) ~70 MB, apt"),
    "kube-packages": Entry(30, 90, "ASSUMPTION: kubelet, kubeadm, kubectl, cri-tools, kubernetes-cni ~90 MB, apt"),
    "prefetch-images": Entry(2, 0, "25-prefetch-images: per image, the ctr call; bytes: the images below"),
    "kubeadm-init": Entry(70, 0, "ASSUMPTION: kubeadm init to /readyz ~70 s once the images are there"),
    "kubeadm-join": Entry(25, 0, "ASSUMPTION: TLS bootstrap + kubelet start"),
    "short-step": Entry(3, 0, "a single kubectl/kubeadm/openssl call over SSH"),
    "gpu-allocatable": Entry(15, 0, "ASSUMPTION: plugin start to nvidia.com/gpu registered on the node"),
    "gpu-test-result/vectoradd": Entry(10, 0, "ASSUMPTION: vectorAdd runs in seconds"),
    "gpu-test-result/tensorflow": Entry(60, 0, "ASSUMPTION: TF import + the seed's small training run"),
    "pod-start": Entry(5, 0, "ASSUMPTION: container start once the image is on the node"),
    "unpack-per-mb": Entry(0.05, 0, "ASSUMPTION: layer unpack ~20 MB/s of compressed data on ESSD"),
    # A node booted from a baked image (components/kubeadm/bake.py): each step finds its work done.
    "baked/driver-prepare": Entry(2, 0, "ASSUMPTION: 10's checks (nouveau blacklisted, headers present), no apt"),
    "baked/nvidia-driver": Entry(
        0.2, 0, "measured: 11 with the driver loaded skips in 0.2 s (shared/fixtures/node-steps-h200, H200, 2026-12-04)"
    ),
    "baked/container-runtime": Entry(5, 0, "ASSUMPTION: 20's checks (toolkit version, containerd config dump), no apt"),
    "baked/kube-packages": Entry(3, 0, "ASSUMPTION: 30's check of the held package versions, no apt"),
    "image": Entry(
        300,
        0,
        "ASSUMPTION: CreateImage from the builder, a first (full) snapshot of ~15 GB written; Aliyun: 'depends on "
        "the size of the disk', no published minutes",
    ),
}
BAKED_ROLES = ("driver-prepare", "nvidia-driver", "container-runtime", "kube-packages")

# Compressed image sizes (linux/amd64), MB, by qualified reference.
IMAGE_MB: dict[str, Entry] = {
    "docker.io/flannel/flannel:v0.26.7": Entry(0, 33, ASSUMPTION + ": flannel v0.26.x ~33 MB"),
    "docker.io/flannel/flannel-cni-plugin:v1.6.2-flannel1": Entry(0, 5, ASSUMPTION + ": ~5 MB"),
    "nvcr.io/nvidia/k8s-device-plugin:v0.20.0": Entry(0, 90, ASSUMPTION + ": ~90 MB (CUDA base + plugin)"),
    "nvcr.io/nvidia/k8s-device-plugin:v0.14.3": Entry(0, 100, ASSUMPTION + ": the seed's plugin, ~100 MB"),
    "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3-distroless": Entry(0, 450, ASSUMPTION + ": DCGM libraries, ~450 MB"),
    "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda11.2.1": Entry(0, 110, ASSUMPTION + ": CUDA 11.2 runtime base, ~110 MB"),
    "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0": Entry(0, 130, ASSUMPTION + ": ~130 MB"),
    "docker.io/tensorflow/tensorflow:2.6.0-gpu": Entry(0, 2600, ASSUMPTION + ": the seed's image, CUDA 11.2 + cuDNN, ~2.6 GB"),
    "kubeadm": Entry(
        0,
        180,
        ASSUMPTION + ": `kubeadm config images list` v1.34: apiserver, controller-manager, "
        "scheduler, proxy, etcd, coredns, pause, ~180 MB together",
    ),
    "kubeadm-join": Entry(0, 30, ASSUMPTION + ": kube-proxy + pause on a worker, ~30 MB"),
}

# The seed's manual path, one step after another on one node (week049-gpu-in-kubernetes.md).
SEED_PATH: list[tuple[str, Entry]] = [
    ("create the instance", TABLE["instance"]),
    ("boot", TABLE["wait-boot"]),
    ("lspci, gcc/make/headers", TABLE["driver-prepare/tesla"]),
    (
        "Tesla driver .run (seed l.41-47)",
        Entry(TABLE["nvidia-driver/tesla"].seconds, TABLE["nvidia-driver/tesla"].mb, "as above"),
    ),
    (
        "CUDA 12.2 local installer (seed l.91-92)",
        Entry(420, 4300, "seed: cuda_12.2.2_535.104.05_linux.run; " + ASSUMPTION + ": ~4.3 GB, ~7 min to install"),
    ),
    ("Docker + nvidia-container-toolkit", Entry(60, 120, ASSUMPTION + ": docker-ce, containerd.io, toolkit ~120 MB")),
    ("kubelet/kubeadm/kubectl", TABLE["kube-packages"]),
    ("kubeadm init (pulls its images)", Entry(TABLE["kubeadm-init"].seconds, IMAGE_MB["kubeadm"].mb, IMAGE_MB["kubeadm"].source)),
    ("flannel", Entry(10, 38, "flannel + CNI plugin images, as above")),
    ("device plugin v0.14.3", Entry(15, IMAGE_MB["nvcr.io/nvidia/k8s-device-plugin:v0.14.3"].mb, "as above")),
    ("TF 2.6.0-gpu pod", Entry(60, IMAGE_MB["docker.io/tensorflow/tensorflow:2.6.0-gpu"].mb, "as above")),
]


def _qualify(image: str) -> str:
    from components.kubeadm.prefetch import qualify

    return qualify(image)


class UnknownImage(KeyError):
    """An image the size table does not list: its pull time would be a guess."""


def image_mb(image: str) -> float:
    entry = IMAGE_MB.get(_qualify(image))
    if entry is None:
        raise UnknownImage(_qualify(image))
    return entry.mb


def _suffix(name: str, roles: list[str]) -> str | None:
    return next((r for r in roles if name.endswith(f"-{r}")), None)


class Model:
    """Earliest finish of every resource, with one download pipe per node."""

    def __init__(self, resources: list[Resource], bandwidth_mbps: float, prefetch: bool, baked: bool = False):
        self.by_urn = {r.urn: r for r in resources}
        self.baked = baked
        self.rate = bandwidth_mbps / 8 * MB  # bytes per second
        self.prefetch = prefetch
        self.hosts = [r.name.removesuffix("-instance") for r in resources if r.type == "alicloud:ecs/instance:Instance"]
        names = {r.name for r in resources}
        self.gpu_hosts = [h for h in self.hosts if f"{h}-bootstrap-nvidia-driver" in names]
        self.driver = {}
        self.pool = {}
        for r in resources:
            if r.name.endswith("-bootstrap-driver-prepare"):
                self.driver[r.name.removesuffix("-bootstrap-driver-prepare")] = command_env(reveal(r.inputs["create"]))[
                    "GPU_DRIVER"
                ]
            if r.type == "alicloud:ecs/instance:Instance":
                self.pool[r.name.removesuffix("-instance")] = (r.inputs.get("tags") or {}).get("gpu-k8s-pool", "")
        self.cp = next(
            (
                r.name.split("-bootstrap-")[0]
                for r in resources
                if r.name.endswith("-bootstrap-prefetch-images")
                and "KUBEADM_IMAGE_REPOSITORY" in command_env(reveal(r.inputs["create"]))
            ),
            self.hosts[0],
        )
        self.pipe_free = dict.fromkeys(self.hosts, 0.0)
        self.present: dict[str, dict[str, tuple[float, float]]] = {h: {} for h in self.hosts}  # image -> (asked, on node)
        if baked:  # a baked GPU node holds its pre-pull list and kubeadm's images from the start
            for r in resources:
                host = r.name.split("-bootstrap-")[0]
                if r.name.endswith("-bootstrap-prefetch-images") and host in self.gpu_hosts:
                    for image in command_env(reveal(r.inputs["create"])).get("IMAGES", "").split():
                        self.present[host][_qualify(image)] = (0.0, 0.0)
                    self.present[host]["kubeadm"] = (0.0, 0.0)
        self.bytes = 0.0
        self.test = "vectoradd"
        self.deps = {r.urn: self._deps(r) for r in resources}

    def _deps(self, r: Resource) -> set[str]:
        deps = set(r.dependencies)
        # A child registers once its parent's URN resolves, which waits for the parent's own
        # dependencies, and so on up (pulumi/runtime/resource.py awaits the parent URN): a
        # component's depends_on (e.g. the bake's on the GPU test) holds back all it contains.
        parent = self.by_urn.get(r.parent)
        while parent is not None:
            deps |= set(parent.dependencies)
            parent = self.by_urn.get(parent.parent)
        if r.type.startswith("kubernetes:"):
            deps |= {u for u, x in self.by_urn.items() if x.type == "pulumi:providers:kubernetes"}
        if not self.prefetch:
            deps = {d for d in deps if not self.by_urn.get(d, r).name.endswith("-prefetch-images")}
        return {d for d in deps if d in self.by_urn and d != r.urn}

    def download(self, host: str, mb: float, at: float) -> float:
        """Bytes through the host's pipe, starting no earlier than ``at``; returns when done."""
        start = max(at, self.pipe_free[host])
        self.pipe_free[host] = start + mb * MB / self.rate
        self.bytes += mb * MB
        return self.pipe_free[host]

    def pull(self, host: str, image: str, at: float) -> float:
        """When ``image`` is on ``host``, asked for at ``at`` (a finished prefetch costs nothing)."""
        image = _qualify(image) if image != "kubeadm" else image
        if image in self.present[host]:
            # already there, or its pull is booked on the node's pipe (a second pull of the same
            # digests waits for the first in containerd's content store: no bytes twice)
            return max(at, self.present[host][image][1])
        mb = image_mb(image) if image != "kubeadm" else IMAGE_MB["kubeadm"].mb
        done = self.download(host, mb, at) + mb * TABLE["unpack-per-mb"].seconds
        self.present[host][image] = (at, done)
        return done

    def work(self, r: Resource, start: float) -> float:
        """Finish time of ``r`` started at ``start``."""
        name = r.name
        if r.type == "alicloud:ecs/instance:Instance":
            return start + TABLE["instance"].seconds
        if r.type == "command:local:Command" and name.endswith("-settle"):
            return start
        if r.type == "command:remote:Command":
            return self._remote(r, start)
        if r.type == "alicloud:ecs/image:Image":
            return start + TABLE["image"].seconds
        if r.type == "kubernetes:apps/v1:DaemonSet":
            return self._daemonset(r, start)
        if r.type == "kubernetes:core/v1:Pod":
            node = reveal(r.inputs["spec"]).get("nodeSelector", {}).get("kubernetes.io/hostname")
            image = reveal(r.inputs["spec"])["containers"][0]["image"]
            return self.pull(node, image, start) + TABLE["pod-start"].seconds
        return start

    def _remote(self, r: Resource, start: float) -> float:
        name = r.name
        if "-bootstrap-" in name:
            host, role = name.split("-bootstrap-", 1)
            if self.baked and host in self.gpu_hosts and role in BAKED_ROLES:
                entry = TABLE[f"baked/{role}"]
            elif role in ("driver-prepare", "nvidia-driver"):
                entry = TABLE[f"{role}/{self.driver[host]}"]
            elif role == "prefetch-images":
                env = command_env(reveal(r.inputs["create"]))
                t = start
                kubeadm = bool(env.get("KUBEADM_IMAGE_REPOSITORY"))
                for image in env.get("IMAGES", "").split():
                    if kubeadm and self.finish_of(f"{host}-bootstrap-kube-packages") <= t:  # as the script does
                        t, kubeadm = self.pull(host, "kubeadm", t), False
                    t = self.pull(host, image, t) + TABLE["prefetch-images"].seconds
                if kubeadm:
                    t = self.pull(host, "kubeadm", max(t, self.finish_of(f"{host}-bootstrap-kube-packages")))
                return t
            else:
                entry = TABLE.get(role, TABLE["short-step"])
            done = self.download(host, entry.mb, start) if entry.mb else start
            return done + entry.seconds
        if name.endswith("-kubeadm-init"):
            return self.pull(self.cp, "kubeadm", start) + TABLE["kubeadm-init"].seconds
        if name.endswith("-kubeadm-join"):
            host = name.removesuffix("-kubeadm-join")
            return self.download(host, IMAGE_MB["kubeadm-join"].mb, start) + TABLE["kubeadm-join"].seconds
        if name.endswith("-gpu-allocatable"):
            return start + TABLE["gpu-allocatable"].seconds
        if name.endswith("-gpu-test-result"):
            return start + TABLE[f"gpu-test-result/{self.test}"].seconds
        return start + TABLE["short-step"].seconds

    def _daemonset(self, r: Resource, start: float) -> float:
        spec = reveal(r.inputs["spec"])["template"]["spec"]
        images = [c["image"] for c in [*spec.get("initContainers", []), *spec.get("containers", [])]]
        name = r.name
        if "-cni-" in name:
            hosts = self.hosts
        elif "device-plugin" in name:
            hosts = self.gpu_hosts
        elif "exporter" in name or "dcgm" in name:
            pools = json.dumps(spec.get("affinity", {}))
            hosts = [h for h in self.gpu_hosts if f'"{self.pool[h]}"' in pools]
        else:
            return start  # Prometheus etc.: not on the way to GPU-ready
        done = start
        for host in hosts:
            at = start
            if "device-plugin" in name:  # its pod lands once the node carries the GPU labels
                at = max(at, self.finish_of(f"{host}-labels"))
            t = at
            for image in images:
                t = self.pull(host, image, t)
            done = max(done, t + TABLE["pod-start"].seconds)
        return done

    def finish_of(self, name: str) -> float:
        return next((f for u, f in self.finish.items() if self.by_urn[u].name == name), 0.0)

    def run(self) -> tuple[float, list[str]]:
        self.finish: dict[str, float] = {}
        self.cause: dict[str, str | None] = {}
        waiting = {u: set(d) for u, d in self.deps.items()}
        users: dict[str, list[str]] = {}
        for u, ds in waiting.items():
            for d in ds:
                users.setdefault(d, []).append(u)
        ready = [(0.0, self.by_urn[u].name, u) for u, ds in waiting.items() if not ds]
        heapq.heapify(ready)
        while ready:
            at, _, urn = heapq.heappop(ready)
            r = self.by_urn[urn]
            if not self.prefetch and r.name.endswith("-prefetch-images"):
                self.finish[urn] = at
            else:
                self.finish[urn] = self.work(r, at)
            for user in users.get(urn, []):
                waiting[user].discard(urn)
                if not waiting[user]:
                    start = max(self.finish[d] for d in self.deps[user])
                    self.cause[user] = max(self.deps[user], key=lambda d: self.finish[d])
                    heapq.heappush(ready, (start, self.by_urn[user].name, user))
        end = max(self.finish, key=lambda u: (self.by_urn[u].name.endswith("-gpu-test-result"), self.finish[u]))
        chain, u = [], end
        while u is not None:
            r = self.by_urn[u]
            shown = r.type.startswith(("command:remote:Command", "kubernetes:", "alicloud:ecs/instance"))
            if shown or r.name.endswith("-settle"):
                chain.append(f"{self.by_urn[u].name} {self.finish[u] / 60:.1f}")
            u = self.cause.get(u)
        return self.finish[end], chain[::-1]


def estimate(
    stack: str, prefetch: bool = True, overrides: dict[str, str] | None = None, *, run=None, baked: bool = False
) -> dict:
    """Minutes and bytes to GPU-ready; ``run``: a program run already made (the CLI's, via the plan);
    ``baked``: every GPU node boots from its baked image (gpu-k8s:nodeImage bake, after the bake)."""
    run = run if run is not None else run_program(stack, overrides or {})
    bandwidth = float(run.config.get("gpu-k8s:publicBandwidthMbps") or 100)
    model = Model(run.resources, bandwidth, prefetch, baked)
    test = run.config.get("gpu-k8s:smokeTest") or "vectoradd"
    model.test = test if test in ("vectoradd", "tensorflow") else "vectoradd"
    seconds, chain = model.run()
    return {
        "stack": stack,
        "prefetch": prefetch,
        "bandwidthMbps": bandwidth,
        "minutes": round(seconds / 60, 1),
        "downloadMB": round(model.bytes / MB),
        "criticalPath": chain,
    }


def builder_minutes(stack: str, overrides: list[str]) -> dict[str, float]:
    """Minutes from the first `up` until each baked image exists (the builder starts after the GPU test)."""
    from tools import plan

    run = plan.plan(stack, [*overrides, "gpu-k8s:nodeImage=bake"])
    model = Model(run.resources, float(run.config.get("gpu-k8s:publicBandwidthMbps") or 100), True)
    model.run()
    return {
        reveal(r.inputs["tags"])["gpu-k8s-bake-target"]: round(model.finish[r.urn] / 60, 1)
        for r in run.resources
        if r.type == "alicloud:ecs/image:Image"
    }


def seed_estimate(bandwidth_mbps: float) -> dict:
    rate = bandwidth_mbps / 8 * MB
    seconds = sum(e.seconds + e.mb * MB / rate for _, e in SEED_PATH)
    return {
        "path": "seed (manual, week049)",
        "bandwidthMbps": bandwidth_mbps,
        "minutes": round(seconds / 60, 1),
        "downloadMB": round(sum(e.mb for _, e in SEED_PATH)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.estimate", description=__doc__.split("\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--config", action="append", default=[], metavar="KEY=VALUE", help="a config override, e.g. gpu-k8s:smokeTest=tensorflow"
    )
    args = parser.parse_args(argv)
    from tools import plan  # the plan's checks: KEY=VALUE, known keys, config errors as one line

    try:
        run = plan.plan(args.stack, args.config)
    except plan.PlanError as err:
        print(f"estimate: {err}", file=sys.stderr)
        return 2
    if run.config.get("gpu-k8s:cluster") == "ack":
        # Nothing of ours runs on ACK's nodes: there are no steps to model.
        print(
            f"estimate: stack {args.stack} uses gpu-k8s:cluster ack: ACK creates and sets up the nodes, so there are no "
            "gpu-k8s node steps to model (ACK: about 15 min to create a cluster, per the provider's docs; no published "
            "figure for adding a GPU node). See README 'kubeadm or ACK?'.",
            file=sys.stderr,
        )
        return 2
    try:
        with_pull, without = estimate(args.stack, True, run=run), estimate(args.stack, False, run=run)
        baked = {**estimate(args.stack, True, run=run, baked=True), "builderMinutes": builder_minutes(args.stack, args.config)}
    except UnknownImage as err:
        print(
            f"estimate: no download size for {err.args[0]} (benchmarks/estimate.py IMAGE_MB lists the images the "
            "stacks use, each with its source): its pull time would be a guess, so there is no estimate",
            file=sys.stderr,
        )
        return 2
    seed = seed_estimate(with_pull["bandwidthMbps"])
    if args.json:
        doc = {"withPrefetch": with_pull, "withoutPrefetch": without, "fromBakedImage": baked, "seed": seed}
        print(json.dumps(doc, indent=2))
        return 0
    saved = 1 - with_pull["minutes"] / without["minutes"] if without["minutes"] else 0.0
    print(f"stack {args.stack} at {with_pull['bandwidthMbps']:g} Mbps (publicBandwidthMbps), minutes to GPU-ready:")
    print(f"  with prefetch-images     {with_pull['minutes']:6.1f} min  {with_pull['downloadMB']:6d} MB")
    print(
        f"  without prefetch-images  {without['minutes']:6.1f} min  {without['downloadMB']:6d} MB  (prefetch saves {saved:.0%})"
    )
    builders = ", ".join(f"{t} {m:g} min" for t, m in baked["builderMinutes"].items())
    print(
        f"  from baked images        {baked['minutes']:6.1f} min  {baked['downloadMB']:6d} MB  "
        f"(nodeImage bake, after the bake; first up: the image exists after {builders})"
    )
    print(
        f"  seed's manual path       {seed['minutes']:6.1f} min  {seed['downloadMB']:6d} MB  (CUDA 12.2 .run, Docker, TF 2.6.0)"
    )
    print("critical path (finish, minutes):")
    for step in with_pull["criticalPath"]:
        print(f"  {step}")
    print("every duration and size: benchmarks/estimate.py TABLE / IMAGE_MB (sources; ASSUMPTION where not measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
