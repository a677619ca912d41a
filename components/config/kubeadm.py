"""kubeadm-backend keys: Kubernetes and its mirror, the NVIDIA driver and toolkit, registry mirrors, pod CIDR."""

from __future__ import annotations

import ipaddress
import re

import pulumi

from components.config.aliyun import VPC_CIDR
from components.config.errors import ConfigError
from components.config.model import NodePool, StackConfig
from components.config.values import CUDA_VERSION_RE, choice, match_pattern
from components.facts import ack as ack_facts
from components.facts import catalog, cuda, downloads, releases

KUBERNETES_MIRRORS = ("auto", "aliyun", "upstream")


_K8S_VERSION_RE = re.compile(r"^1\.(\d{2})\.\d{1,2}$")


# The NVIDIA Container Toolkit lines step 20 is tested with (tests/scripts/test_runtime_real.py runs
# the real nvidia-ctk 1.17.8 and 1.18.0): 1.17 edits config.toml, 1.18 writes a drop-in.
_TOOLKIT_VERSION_RE = re.compile(r"^1\.1[78]\.\d{1,2}$")


SUPPORTED_TOOLKITS = "a 1.17.x or 1.18.x release (the supported NVIDIA Container Toolkit lines), e.g. 1.17.8"


_IMAGE_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+$")


_REGISTRY_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?$")


_MIRROR_URL_RE = re.compile(r"^https?://[^\s\"'\\]+$")


# Oldest and newest Kubernetes minors this program's kubeadm config and manifests target.
K8S_MIN_MINOR, K8S_MAX_MINOR = 28, 35


# kubeadm's default serviceSubnet (ClusterConfiguration networking.serviceSubnet, kubeadm
# v1beta3/v1beta4 API docs: "defaults to 10.96.0.0/12"); 40-kubeadm-init.sh keeps it.
SERVICE_CIDR = "10.96.0.0/12"


# The offline plan cannot decrypt a `secure:` stack value and passes this marker instead
# (tools/harness.py effective_config); the deployed stack gets the real value.
OFFLINE_SECRET_MARKER = "<secret from stack file>"


# A mirror URL: scheme, host[:port], optional path. No shell or list separators, quotes
# or spaces: it is written into hosts.toml by a shell script.
_SAFE_MIRROR_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?(/[A-Za-z0-9._~/-]*)?$")


_SAFE_URL_RE = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?/[A-Za-z0-9._~/%+=&?:@-]*$")


# Registries the cluster pulls from that are often unreachable from mainland China.
_FOREIGN_REGISTRIES = ("docker.io", "nvcr.io")


def parse_registry_mirrors(value: object) -> dict[str, str]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            "registryMirrors", value, 'a map of registry -> mirror URL, e.g. {"docker.io": "https://<id>.mirror.aliyuncs.com"}'
        )
    mirrors: dict[str, str] = {}
    for registry, url in value.items():
        if not _REGISTRY_RE.match(str(registry)):
            raise ConfigError(f"registryMirrors.{registry}", registry, "a registry host such as docker.io or nvcr.io")
        if not isinstance(url, str) or not _MIRROR_URL_RE.match(url):
            raise ConfigError(f"registryMirrors.{registry}", url, "an http(s) mirror URL without spaces or quotes")
        mirrors[str(registry)] = url.rstrip("/")
    return mirrors


def parse_container_toolkit_version(value: str) -> str:
    return match_pattern("containerToolkitVersion", value, _TOOLKIT_VERSION_RE, SUPPORTED_TOOLKITS)


def parse_kubernetes_version(value: str) -> str:
    accepted = f"MAJOR.MINOR.PATCH from 1.{K8S_MIN_MINOR}.0 to 1.{K8S_MAX_MINOR}.x, e.g. 1.34.2"
    m = _K8S_VERSION_RE.match(value)
    if not m or not K8S_MIN_MINOR <= int(m.group(1)) <= K8S_MAX_MINOR:
        raise ConfigError("kubernetesVersion", value, accepted)
    return value


def resolve_kubernetes_mirror(value: str, region: str) -> str:
    choice("kubernetesMirror", value, KUBERNETES_MIRRORS)
    if value == "auto":
        return "aliyun" if region.startswith("cn-") else "upstream"
    return value


def parse_driver_version(value: str) -> str:
    """A Tesla driver version whose branch the CUDA table knows (it decides the test image)."""
    accepted = f"an NVIDIA driver version of branch {min(cuda.BRANCH_MAX_CUDA)} or newer, e.g. 535.129.03"
    try:
        cuda.driver_cuda(value)
    except ValueError:
        raise ConfigError("driverVersion", value, accepted) from None
    return value


def parse_grid_driver_version(value: str) -> str:
    """Empty (Aliyun's GRID driver by family) or a GRID driver version the CUDA table knows."""
    if value == "":
        return value
    accepted = (
        f"empty (by family: {cuda.GRID_DRIVER_DEFAULT}, {cuda.GRID_DRIVER_BY_FAMILY['sgn8ia']} on sgn8ia) or a GRID "
        f"driver version of branch {min(cuda.BRANCH_MAX_CUDA)} or newer, e.g. 535.183.06"
    )
    try:
        cuda.driver_cuda(value)
    except ValueError:
        raise ConfigError("gridDriverVersion", value, accepted) from None
    return value


def parse_pod_cidr(value: str) -> str:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ConfigError("podCidr", value, "an IPv4 CIDR of /8 to /20, e.g. 10.244.0.0/16") from None
    if net.version != 4 or not 8 <= net.prefixlen <= 20:
        raise ConfigError("podCidr", value, "an IPv4 CIDR of /8 to /20, e.g. 10.244.0.0/16")
    return str(net)


def check_pod_cidr_overlaps(pod_cidr: str, service_cidr: str = SERVICE_CIDR) -> None:
    """Pods must not share addresses with the VPC (node IPs) or the Service range."""
    net = ipaddress.ip_network(pod_cidr)
    for what, other in (("the VPC/vSwitch", VPC_CIDR), ("the Kubernetes Service range", service_cidr)):
        if net.overlaps(ipaddress.ip_network(other)):
            raise ConfigError(
                "podCidr",
                pod_cidr,
                f"a CIDR outside {VPC_CIDR} and {service_cidr}, e.g. 10.244.0.0/16",
                reason=f"it overlaps {what} {other}.",
            )


def checked_pod_cidr(value: str, *, ack: bool = False) -> str:
    cidr = parse_pod_cidr(value)
    check_pod_cidr_overlaps(cidr, service_cidr=ack_facts.SERVICE_CIDR if ack else SERVICE_CIDR)
    return cidr


def check_grid_driver_url(raw: str | None) -> None:
    """gridDriverUrl: https, a URL, nothing a shell would split. The value is never shown."""
    if not raw or raw == OFFLINE_SECRET_MARKER:
        return
    if not raw.startswith("https://"):
        problem = f"scheme {raw.split(':', 1)[0][:10]!r} is not https" if ":" in raw else "it is not a URL"
    elif not _SAFE_URL_RE.match(raw):
        problem = "it is not host/path, or it holds a space, quote or shell character"
    else:
        return
    raise ConfigError(
        "gridDriverUrl",
        "[secret]",
        "an https:// URL of a GRID .run installer, without spaces or quotes",
        reason=f"{problem}.",
    )


def check_registry_mirror_urls(mirrors: dict[str, str]) -> None:
    for registry, url in mirrors.items():
        if not _SAFE_MIRROR_URL_RE.match(url):
            raise ConfigError(
                f"registryMirrors.{registry}",
                url,
                "an http(s) URL of letters, digits, '.', '-', ':' port and '/' path only",
                reason="it contains a shell or list separator, quote or space.",
            )


def warn_unverified_driver(driver_version: str, pools: tuple[NodePool, ...]) -> None:
    if any(p.profile.driver == catalog.TESLA for p in pools) and not downloads.tesla_run_sha256(driver_version):
        pulumi.log.warn(
            f"gpu-k8s:driverVersion {driver_version}: download unverified: no published SHA-256 is known for "
            f"NVIDIA-Linux-x86_64-{driver_version}.run (components/facts/downloads.py), so step 11 installs it unchecked"
        )


def warn_unreachable_registries(region: str, mirrors: dict[str, str]) -> None:
    missing = [r for r in _FOREIGN_REGISTRIES if r not in mirrors]
    if region.startswith("cn-") and missing:
        pulumi.log.warn(
            f"{region} is in mainland China, where {' and '.join(missing)} are often unreachable; the flannel, "
            "device plugin and GPU test images come from them. If pulls fail, set gpu-k8s:registryMirrors (README)."
        )


def check_release(key: str, version: str) -> None:
    """A version that was never released is refused; one newer than the table is warned."""
    component = next(c for c in releases.COMPONENTS if c.key == key)
    verdict = releases.check(component, version)
    if verdict.status == "unknown":
        newest = ", ".join(component.newest())
        raise ConfigError(key, version, f"a released version, e.g. {newest}", reason=verdict.message + ".")
    if verdict.status == "newer":
        pulumi.log.warn(verdict.message)


def check_releases(loaded: StackConfig) -> None:
    """Every pinned version (already format-checked) against components/facts/releases.py."""
    check_release("kubernetesVersion", loaded.kubernetes_version)
    check_release("flannelVersion", loaded.flannel_version)
    check_release("devicePluginVersion", loaded.device_plugin_version)
    check_release("containerToolkitVersion", loaded.container_toolkit_version)
    check_release("driverVersion", loaded.driver_version)
    if loaded.install_cuda_toolkit:
        check_release("cudaToolkitVersion", loaded.cuda_toolkit_version)


def parse_cuda_toolkit_version(raw: str) -> str:
    return match_pattern("cudaToolkitVersion", raw, CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 12.2")


def parse_flannel_version(raw: str) -> str:
    return match_pattern("flannelVersion", raw, _IMAGE_TAG_RE, "an image tag such as v0.26.7")
