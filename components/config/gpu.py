"""GPU-stack keys: the device plugin, MIG and time-slicing, the GPU test and its image, GPU metrics."""

from __future__ import annotations

import re
from pathlib import Path

import pulumi

from components.config.errors import ConfigError
from components.config.model import IMAGE_REF_RE, MAX_TIME_SLICING_REPLICAS, NodePool
from components.config.values import boolean, choice, json_value, match_pattern, parse_count
from components.facts import ack as ack_facts
from components.facts import cuda, dcgm

_GPU_TEST_RUN_RE = re.compile(r"^[A-Za-z0-9.:-]{0,40}$")


# The device plugin reads its config file (CONFIG_FILE) since v0.12.0.
MIN_DEVICE_PLUGIN_VERSION = (0, 12)


def _plugin_tag_at_least(tag: str, minimum: tuple[int, int]) -> bool:
    """A device plugin tag vMAJOR.MINOR.PATCH of at least ``minimum`` (major, minor)."""
    m = re.match(r"^v(\d+)\.(\d+)\.\d+$", tag)
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= minimum


def device_plugin_version_ok(tag: str) -> bool:
    return _plugin_tag_at_least(tag, MIN_DEVICE_PLUGIN_VERSION)


# GPU Feature Discovery writes NodeFeature objects (NFD's API) by default from v0.19.0
# (NVIDIA/k8s-device-plugin #1504): components/gpu/feature_discovery.py deploys it from there.
MIN_FEATURE_DISCOVERY_VERSION = (0, 19)


def feature_discovery_supported(tag: str) -> bool:
    return _plugin_tag_at_least(tag, MIN_FEATURE_DISCOVERY_VERSION)


def parse_device_plugin_version(value: str) -> str:
    if not device_plugin_version_ok(value):
        raise ConfigError("devicePluginVersion", value, "an image tag v0.12.0 or newer, e.g. v0.20.0 or the seed's v0.14.3")
    return value


def check_smoke_test(
    test: str,
    image: str | None,
    declared: str | None,
    pools: tuple[NodePool, ...],
    driver: str,
    grid_driver: str = "",
    *,
    ack: bool = False,
) -> None:
    """Refuse, at plan time, a test image the nodes' drivers cannot run (the seed's cuda>=12.3)."""
    drivers = [(cuda.node_driver(p.profile, driver, grid_driver), p.profile.driver) for p in pools if p.count]
    problem = cuda.smoke_test_error(test, image, declared, drivers)
    if problem and ack:
        problem = problem.replace("gpu-k8s:driverVersion", "gpu-k8s:ackNvidiaDriverVersion")
        problem += f" ACK offers: {', '.join(ack_facts.DRIVER_VERSIONS)}."
    if problem:
        key, value = ("smokeTestImage", image) if image else ("smokeTest", test)
        if declared is not None and "smokeTestCudaVersion" in problem:
            key, value = "smokeTestCudaVersion", declared  # the declared CUDA is what is wrong
            raise ConfigError(key, value, "the CUDA version of gpu-k8s:smokeTestImage, or empty", reason=problem)
        accepted = "an image whose CUDA the node drivers support"
        raise ConfigError(key, value, accepted, reason=problem)


# What each test's pod runs: vectoradd uses the image's own entrypoint (CUDA sample
# vectorAdd prints "Test PASSED"); tensorflow runs the seed's script with python3 + TF. An
# image is judged by what it runs, not its name (an ACR copy may be called anything): a name
# that does not look like the test is a warning, and none when the user declared its CUDA.
def warn_smoke_test_image_kind(test: str, image: str | None, declared_cuda: str | None) -> None:
    if image is None or test == "none" or declared_cuda is not None:
        return
    name = image.lower()
    if test == "vectoradd" and "vectoradd" not in name:
        pulumi.log.warn(
            f"gpu-k8s:smokeTestImage {image}: the name does not say it is a CUDA vectoradd sample; the vectoradd test "
            "runs the image's entrypoint and passes only if it prints 'Test PASSED' (gpu-k8s:smokeTestCudaVersion "
            "declares a copy's CUDA and silences this)."
        )
    if test == "tensorflow" and not re.search(r"tensorflow|(?:^|[/_-])tf(?:$|[/_:-])", name):
        pulumi.log.warn(
            f"gpu-k8s:smokeTestImage {image}: the name does not say it is a TensorFlow GPU image; the tensorflow test "
            "runs 'python3 /app/test.py', which imports TensorFlow (gpu-k8s:smokeTestCudaVersion declares a copy's CUDA "
            "and silences this)."
        )


def parse_monitoring(cfg: pulumi.Config) -> dict:
    """gpu-k8s:monitoring and its versions; a replacement counters CSV is read and checked here."""
    mode = choice("monitoring", cfg.get("monitoring") or "", dcgm.MODES)
    exporter = cfg.get("dcgmExporterVersion") or ""
    if not dcgm.exporter_version_ok(exporter):
        newest = ", ".join(list(dcgm.KNOWN_EXPORTER_RELEASES)[:3])
        raise ConfigError("dcgmExporterVersion", exporter, f"a known dcgm-exporter release <DCGM>-<exporter>, e.g. {newest}")
    prometheus = cfg.get("prometheusVersion") or ""
    if not dcgm.prometheus_version_ok(prometheus):
        raise ConfigError("prometheusVersion", prometheus, "a prom/prometheus tag v3.x.y or newer, e.g. v3.14.0")
    counters = None
    path = cfg.get("dcgmCountersCsv") or ""
    if path:
        file = Path(__file__).resolve().parents[2] / path
        try:
            counters = file.read_text()
        except (OSError, ValueError):  # ValueError: not UTF-8, or a NUL in the path
            raise ConfigError("dcgmCountersCsv", path, "a readable CSV file, relative to the project directory") from None
        problem = dcgm.counters_error(counters)
        if problem:
            accepted = "a dcgm-exporter counters CSV (see components/facts/dcgm/default-counters.csv)"
            raise ConfigError("dcgmCountersCsv", path, accepted, reason=f"{problem}.")
    return {
        "monitoring": mode,
        "dcgm_exporter_version": exporter,
        "prometheus_version": prometheus,
        "dcgm_counters": counters,
        "prometheus_retention": parse_prometheus_retention(cfg.get("prometheusRetention") or ""),
        "service_monitor_labels": parse_service_monitor_labels(json_value(cfg, "serviceMonitorLabels", {})),
        "vgpu_metrics": boolean(cfg, "vgpuMetrics"),
    }


# A Prometheus duration (model.ParseDuration): units y w d h m s ms, largest first, e.g. 7d or 1d12h.
# Kubernetes label keys (an optional DNS-subdomain prefix and a name) and values.
_LABEL_NAME_RE = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")


def parse_prometheus_retention(raw: str) -> str:
    if not dcgm.prometheus_duration_ok(raw):  # the rule the monitoring component checks, so never a traceback
        accepted = "a Prometheus duration above zero and at most 100y, such as 24h, 7d or 1d12h"
        raise ConfigError("prometheusRetention", raw, accepted)
    return raw


def parse_service_monitor_labels(value: object) -> dict[str, str]:
    accepted = 'a map of Kubernetes labels, e.g. {"release": "kube-prometheus-stack"}'
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ConfigError("serviceMonitorLabels", value, accepted)
    for key, label in value.items():
        if not isinstance(label, str) or not _LABEL_NAME_RE.match(str(key)) or not _LABEL_VALUE_RE.match(label):
            raise ConfigError(f"serviceMonitorLabels.{key}", label, accepted + " (label names and values)")
    return dict(value)


def parse_smoke_test_cuda_version(raw: str) -> str | None:
    if not raw:
        return None
    return match_pattern("smokeTestCudaVersion", raw, cuda.CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 11.4 or 12.2")


def parse_smoke_test_image(raw: str) -> str | None:
    if not raw:
        return None
    if not IMAGE_REF_RE.match(raw):
        raise ConfigError("smokeTestImage", raw, "an image reference such as registry/repo/name:tag")
    return raw


def parse_time_slicing(raw: str, mig_strategy: str) -> int:
    replicas = parse_count("timeSlicingReplicas", raw, maximum=MAX_TIME_SLICING_REPLICAS)
    if mig_strategy == "mixed" and replicas > 1:
        raise ConfigError(
            "timeSlicingReplicas",
            str(replicas),
            "1 when gpu-k8s:migStrategy is mixed",
            reason="this program time-slices nvidia.com/gpu only; under mixed the MIG devices are nvidia.com/mig-<profile> "
            "resources, which the plugin can share only when each profile is named (not done here).",
        )
    return replicas


def check_time_slicing_rename(rename: bool, replicas: int) -> None:
    if rename and replicas == 1:
        raise ConfigError(
            "timeSlicingRenameByDefault", "true", "false unless gpu-k8s:timeSlicingReplicas is above 1 (nothing is shared)"
        )


def check_mig_strategy(mig_strategy: str, pools: tuple[NodePool, ...]) -> None:
    """MIG partitions A100/A30/H100-class GPUs only: a strategy on GPUs without MIG is refused."""
    if mig_strategy == "none":
        return
    gpus = [p for p in pools if p.count]
    if all(p.profile.mig_capable is False for p in gpus):
        models = ", ".join(dict.fromkeys(p.profile.gpu_model or p.instance_type for p in gpus))
        raise ConfigError(
            "migStrategy",
            mig_strategy,
            "none on these GPUs (MIG needs an A100, A30, H100-class GPU with MIG mode enabled on the node)",
            reason=f"{models} have no MIG: the plugin would advertise whole GPUs and its pod would gain SYS_ADMIN for nothing.",
        )
    unknown = [p.instance_type for p in gpus if p.profile.mig_capable is not True]
    if unknown:
        pulumi.log.warn(
            f"gpu-k8s:migStrategy {mig_strategy}: {', '.join(dict.fromkeys(unknown))} may have no MIG (the catalog cannot "
            "tell, or knows it has none); MIG mode must be enabled on the GPU (nvidia-smi -mig 1) and partitioned "
            "before the plugin advertises MIG devices: this program does neither."
        )


# GPU memory one TensorFlow test pod needs, even with TF_FORCE_GPU_ALLOW_GROWTH: its CUDA
# context and the cuBLAS/cuDNN handles take a few hundred MiB before the test's own tensors.
# Below REFUSE each pod is certain to fail with out-of-memory; below WARN it is likely.
TF_POD_MEMORY_REFUSE_MIB, TF_POD_MEMORY_WARN_MIB = 256, 768


def check_time_slicing_memory(test: str, replicas: int, pools: tuple[NodePool, ...]) -> None:
    """N time-sliced TensorFlow pods share one node's GPU memory: refuse what cannot fit."""
    if test != "tensorflow" or replicas <= 1:
        return
    for pool in pools:
        memory = pool.profile.gpu_memory_gib
        if not pool.count or memory is None:
            continue
        per_pod = int(memory * 1024 / replicas)
        what = (
            f"{replicas} TensorFlow test pods share the {memory:g} GiB of GPU memory of {pool.instance_type} "
            f"(about {per_pod} MiB each); a TensorFlow process needs several hundred MiB for its CUDA context alone"
        )
        if per_pod < TF_POD_MEMORY_REFUSE_MIB:
            fits = max(1, int(memory * 1024 // TF_POD_MEMORY_WARN_MIB))
            raise ConfigError(
                "timeSlicingReplicas",
                str(replicas),
                f"at most {fits} with gpu-k8s:smokeTest tensorflow on {pool.instance_type}, or smokeTest vectoradd",
                reason=f"{what}, so the pods would fail out of memory.",
            )
        if per_pod < TF_POD_MEMORY_WARN_MIB:
            pulumi.log.warn(f"gpu-k8s:timeSlicingReplicas {replicas}: {what}; some pods may fail out of memory.")


def parse_gpu_test_run(raw: str) -> str:
    return match_pattern("gpuTestRun", raw, _GPU_TEST_RUN_RE, "empty or up to 40 letters, digits, '.', ':', '-'")
