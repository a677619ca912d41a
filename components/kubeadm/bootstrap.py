"""NodeBootstrap: prepare one node over SSH, each step its own resource.

    wait-boot ─> driver-prepare ─> settle ─┬─> nvidia-driver ─> gpu-verify
                                            ├─> container-runtime ─> prefetch-images
                                            └─> kube-packages
(a non-GPU control plane skips the driver steps: wait-boot ─> runtime, packages)

The driver, the container runtime and the Kubernetes packages are independent, so
they run in parallel (their apt calls wait for the dpkg lock). ``driver-prepare``
may reboot the node to unload nouveau; ``settle`` then waits on this machine long
enough for the reboot to start, and the next steps' SSH dials retry until it is back.
``prefetch-images`` pulls the node's images (components/kubeadm/prefetch.py) as soon as containerd
is configured, while the driver builds; nothing waits for it and it takes no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_command as command

from components import steps
from components.facts import catalog, cuda, downloads
from components.facts.catalog import GpuProfile
from components.facts.nvidia_smi import parse_query
from components.kubeadm.timings import TimedStep, parse_timing

DOCKER_TEST_IMAGE = "ubuntu:22.04"
# A reboot to unload nouveau takes the node away for about a minute; wait this long
# before dialling again so the next step does not connect to the dying system.
REBOOT_SETTLE_SECONDS = 60


@dataclass(frozen=True, kw_only=True)
class NodeSetup:
    """What every node gets (from the stack config)."""

    driver_version: str
    grid_driver_version: str = ""  # "" = Aliyun's GRID driver for the family
    install_cuda_toolkit: bool
    cuda_toolkit_version: str
    grid_driver_url: pulumi.Input[str] | None
    container_toolkit_version: str
    package_mirror: str  # aliyun | upstream
    registry_mirrors: dict[str, str] = field(default_factory=dict)
    install_docker: bool = False
    gpu_isolation: bool = False  # the toolkit takes the device plugin's list only (device_plugin.py)
    kubernetes_version: str

    def __post_init__(self):
        if self.package_mirror not in ("aliyun", "upstream"):
            raise ValueError("NodeSetup.package_mirror must be aliyun or upstream")


@dataclass(frozen=True, kw_only=True)
class NodeBootstrapArgs:
    hostname: str
    public_ip: pulumi.Input[str]
    instance_id: pulumi.Input[str]  # a new instance re-runs every step (steps.py)
    private_key: pulumi.Input[str]
    profile: GpuProfile | None  # None: no GPU steps (dedicated control plane)
    setup: NodeSetup
    after: tuple[pulumi.Resource, ...] = ()  # what the first SSH step waits for (the port-22 rules)
    images: tuple[str, ...] = ()  # pulled ahead by prefetch-images (fully qualified references)
    kubeadm_image_repository: str = ""  # control plane: kubeadm's images are pulled ahead too

    def __post_init__(self):
        if not self.hostname:
            raise ValueError("NodeBootstrapArgs.hostname is required")
        bad = [i for i in self.images if not i or any(c.isspace() for c in i)]
        if bad:
            raise ValueError(f"NodeBootstrapArgs.images: {bad[0]!r} is not an image reference")


def _mirrors_env(mirrors: dict[str, str]) -> str:
    return ";".join(f"{registry}={url}" for registry, url in sorted(mirrors.items()))


def prefetch_env(images: tuple[str, ...], kubeadm_image_repository: str, kubernetes_version: str) -> dict[str, str]:
    """25-prefetch-images.sh's inputs (the image list is also the step's trigger)."""
    env = {"IMAGES": " ".join(images)}
    if kubeadm_image_repository:
        env |= {"KUBEADM_IMAGE_REPOSITORY": kubeadm_image_repository, "KUBERNETES_VERSION": kubernetes_version}
    return env


def _settle_timing(prepare_stdout: str | None, prepare_stderr: str | None) -> str | None:
    """settle's TIMING line (it sleeps on this machine, printing none), or None when prepare
    reported no timing (offline)."""
    if parse_timing(prepare_stderr) is None:
        return None
    seconds = REBOOT_SETTLE_SECONDS if "reboot" in (prepare_stdout or "").split() else 0
    return f"[gpu-k8s settle] TIMING seconds={seconds} rx_bytes=unknown"


def _settle_command(prepare_stdout: str, instance_id: str) -> str:
    wait = f"sleep {REBOOT_SETTLE_SECONDS}" if "reboot" in (prepare_stdout or "").split() else "true"
    return f"{wait} # after driver-prepare on {instance_id}"


def _driver_env(profile: GpuProfile, setup: NodeSetup) -> dict[str, str]:
    env = {
        "GPU_DRIVER": profile.driver,
        "DRIVER_VERSION": setup.driver_version if profile.driver == catalog.TESLA else "",
        "GRID_PLUGIN": profile.grid_plugin or "",
        "INSTALL_CUDA_TOOLKIT": str(setup.install_cuda_toolkit).lower(),
        "CUDA_TOOLKIT_VERSION": setup.cuda_toolkit_version,
    }
    sha256 = downloads.tesla_run_sha256(setup.driver_version) if profile.driver == catalog.TESLA else ""
    if sha256:  # only when known, so an unknown version's step inputs stay as they were
        env["DRIVER_SHA256"] = sha256
    return env


class NodeBootstrap(pulumi.ComponentResource):
    kubernetes_ready: list[pulumi.Resource]  # what kubeadm init/join must follow
    verified_setup: dict[str, dict[str, str]]  # the driver and runtime steps' inputs (what the GPU test verifies)
    gpu_verify: command.remote.Command | None
    gpu_name: pulumi.Output[str] | None
    driver_version: pulumi.Output[str] | None
    prefetch: command.remote.Command | None
    timed: list[tuple[TimedStep, pulumi.Output[str]]]  # every step in run order, with its stderr

    def __init__(self, name: str, args: NodeBootstrapArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:bootstrap:NodeBootstrap", name, {}, opts)
        setup, profile = args.setup, args.profile
        # Generous dials: the instance boots (or reboots) while we wait.
        on = steps.host(args.public_ip, args.private_key, args.instance_id, dial_error_limit=80)

        self.timed = []

        def step(role: str, script: str, after: list[pulumi.Resource], **kw) -> command.remote.Command:
            cmd = steps.run_script(f"{name}-{role}", script=script, on=on, after=after, parent=self, **kw)
            waits = tuple(f"{name}-{r}" for r, c in roles.items() if c in after)
            roles[role] = cmd
            self.timed.append((TimedStep(f"{name}-{role}", args.hostname, role, waits), cmd.stderr))
            return cmd

        roles: dict[str, pulumi.Resource] = {}

        wait = step("wait-boot", "00-wait-boot.sh", list(args.after), timeout="20m")
        base: list[pulumi.Resource] = [wait]
        self.gpu_verify = self.gpu_name = self.driver_version = None
        self.driver_installed: pulumi.Output[str] | None = None
        self.verified_setup = {}
        self.verified_steps: list[pulumi.Output[str]] = []  # ids: a step replaced (new script, new host) is a new id
        driver = None
        if profile is not None:
            prepare = step("driver-prepare", "10-driver-prepare.sh", [wait], env={"GPU_DRIVER": profile.driver}, timeout="20m")
            # The command names the instance: on a new host that reboots, the same "sleep" text
            # would be no change, and nothing would wait. An update, not a replacement: its id
            # stays, so the steps that wait for it (their triggers hold it) do not re-run for it.
            settle = command.local.Command(
                f"{name}-settle",
                create=pulumi.Output.all(prepare.stdout, args.instance_id).apply(lambda v: _settle_command(*v)),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[prepare]),
            )
            base = [prepare, settle]
            # settle sleeps on this machine (no TIMING line): its seconds follow prepare's stdout.
            roles["settle"] = settle
            # Measured only where prepare was (its TIMING line): offline both stay placeholders. The
            # bytes a node takes in while it reboots are not counted.
            self.timed.append(
                (
                    TimedStep(f"{name}-settle", args.hostname, "settle", (f"{name}-driver-prepare",)),
                    pulumi.Output.all(prepare.stdout, prepare.stderr).apply(lambda io: _settle_timing(*io)),
                )
            )
            grid_url = setup.grid_driver_url if profile.driver == catalog.GRID and setup.grid_driver_url is not None else ""
            self.verified_setup["nvidia-driver"] = _driver_env(profile, setup)
            self.verified_setup["expected-driver"] = {
                "version": cuda.node_driver(profile, setup.driver_version, setup.grid_driver_version)
            }
            driver = step(
                "nvidia-driver",
                "11-nvidia-driver.sh",
                base,
                env=self.verified_setup["nvidia-driver"],
                stdin=pulumi.Output.concat(grid_url, "\n"),
                timeout="40m",
            )
            # What step 11 reports it installed (driver_version=...): a new GRID .run from another
            # gridDriverUrl (stdin, a secret: it re-runs 11 as an update, which keeps its id) shows
            # here, so gpu-verify and the GPU test run again. Never secret: a version string.
            self.driver_installed = pulumi.Output.unsecret(driver.stdout)
            self.gpu_verify = step(
                "gpu-verify",
                "12-gpu-verify.sh",
                [driver],
                env={
                    "EXPECTED_GPU_NAME": profile.expected_gpu_name or "",
                    "GPU_DRIVER": profile.driver,  # the failure hint: GRID only on vGPU families
                    "DRIVER_VERSION": cuda.node_driver(profile, setup.driver_version, setup.grid_driver_version),
                },
                timeout="5m",
                extra_triggers=[self.driver_installed],
            )
            gpus = self.gpu_verify.stdout.apply(parse_query)
            self.gpu_name = gpus.apply(lambda g: g[0].name if g else "unknown")
            self.driver_version = gpus.apply(lambda g: g[0].driver_version if g else "unknown")
        self.verified_setup["container-runtime"] = {
            "CONTAINER_TOOLKIT_VERSION": setup.container_toolkit_version,
            "PACKAGE_MIRROR": setup.package_mirror,
            "REGISTRY_MIRRORS": _mirrors_env(setup.registry_mirrors),
            "INSTALL_DOCKER": str(setup.install_docker).lower(),
            "NVIDIA_RUNTIME": str(profile is not None).lower(),  # no GPU: runc stays the default
            # Only with isolation, so a stack that keeps NVIDIA's defaults keeps its step's inputs.
            **({"GPU_ISOLATION": "true"} if setup.gpu_isolation and profile is not None else {}),
        }
        runtime = step(
            "container-runtime", "20-container-runtime.sh", base, env=self.verified_setup["container-runtime"], timeout="30m"
        )
        self.prefetch = None
        self.docker_check = None
        if args.images or args.kubeadm_image_repository:
            env = prefetch_env(args.images, args.kubeadm_image_repository, setup.kubernetes_version)
            # After container-runtime only (never the driver); a new image list re-runs it.
            self.prefetch = step(
                "prefetch-images",
                "25-prefetch-images.sh",
                [runtime],
                env=env,
                timeout="35m",
                extra_triggers=[" ".join(f"{k}={v}" for k, v in sorted(env.items()))],
            )
        if setup.install_docker and driver is not None:
            docker_env = {"DOCKER_TEST_IMAGE": DOCKER_TEST_IMAGE}
            if setup.gpu_isolation:
                docker_env["GPU_ISOLATION"] = "true"
            self.docker_check = step("docker-gpu-check", "21-docker-gpu-check.sh", [runtime, driver], env=docker_env)
        packages = step(
            "kube-packages",
            "30-kube-packages.sh",
            base,
            env={"KUBERNETES_VERSION": setup.kubernetes_version, "PACKAGE_MIRROR": setup.package_mirror},
            timeout="30m",
        )
        self.kubernetes_ready = [runtime, packages]
        # Every step of this node, e.g. what must be done before a bake builder is cleaned.
        self.all_steps = list(roles.values())
        self.verified_steps = [c.id for c in (driver, self.gpu_verify, runtime) if c is not None]
        self.register_outputs(
            {
                "gpuName": self.gpu_name or "none",
                "driverVersion": self.driver_version or "none",
            }
        )
