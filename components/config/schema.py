"""Pulumi.yaml's config declarations (the only place defaults live) and which backend reads which key."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from components.config.errors import ConfigError

CLUSTER_BACKENDS = ("kubeadm", "ack")


# Keys only the kubeadm backend reads: on ACK the nodes come from ACK's GPU node image, with
# the driver, runtime, Kubernetes, pod network and device plugin that ACK installs.
KUBEADM_ONLY_KEYS = (
    "allowedCidrs",  # ACK's API server load balancer is ACK's: this program opens no port on ACK
    "controlPlaneInstanceType",
    "imageNameRegex",
    "imageId",
    "nodeImage",
    "driverVersion",
    "gridDriverUrl",
    "gridDriverVersion",
    "installCudaToolkit",
    "cudaToolkitVersion",
    "containerToolkitVersion",
    "installDocker",
    "registryMirrors",
    "kubernetesVersion",
    "kubernetesMirror",
    "flannelVersion",
    "devicePluginVersion",
    "migStrategy",
    "timeSlicingReplicas",
    "timeSlicingRenameByDefault",
    "gpuIsolation",
)


ACK_ONLY_KEYS = ("ackClusterSpec", "ackKubernetesVersion", "ackNvidiaDriverVersion")


_PROJECT_FILE = Path(__file__).resolve().parents[2] / "Pulumi.yaml"


@cache
def project_config_declarations() -> dict[str, dict]:
    """Pulumi.yaml's config section (the only place defaults live), read once."""
    import yaml

    return dict((yaml.safe_load(_PROJECT_FILE.read_text()) or {}).get("config") or {})


def project_default(key: str) -> object:
    """The default Pulumi.yaml declares for a key (``default:``, or ``value:`` for untyped keys)."""
    decl = project_config_declarations().get(key)
    if not isinstance(decl, dict):
        return None
    return decl.get("default", decl.get("value"))


def _is_default(key: str, raw: str | None) -> bool:
    if raw is None:
        return True
    default = project_default(key)
    if isinstance(default, str):
        return raw == default
    try:
        return json.loads(raw) == default
    except json.JSONDecodeError:
        return str(default).lower() == raw.lower()


# Keys whose value is a secret (set with --secret): never part of a message.
SECRET_KEYS = ("gridDriverUrl",)


def check_backend_keys(cluster: str, values: dict[str, str | None]) -> None:
    """A key the chosen backend never reads is refused, not silently ignored."""
    other, why = (
        (ACK_ONLY_KEYS, "it applies to gpu-k8s:cluster ack only.")
        if cluster == "kubeadm"
        else (
            KUBEADM_ONLY_KEYS,
            "on ACK the nodes run ACK's GPU node image: ACK installs the driver (gpu-k8s:ackNvidiaDriverVersion), "
            "container runtime, Kubernetes (gpu-k8s:ackKubernetesVersion), pod network and device plugin.",
        )
    )
    for key in other:
        if not _is_default(key, values.get(key)):
            accepted = f"it unset (its default {json.dumps(project_default(key))}) with gpu-k8s:cluster {cluster}"
            shown = "[secret]" if key in SECRET_KEYS else values[key]  # a URL may carry a token: never echoed
            raise ConfigError(key, shown, accepted, reason=f"{why} Fix: remove it, or set gpu-k8s:cluster.")
