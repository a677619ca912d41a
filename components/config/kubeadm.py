"""kubeadm-backend keys: Kubernetes and its mirror, the NVIDIA driver and toolkit, registry mirrors, pod CIDR."""

from __future__ import annotations

import ipaddress
import re

import pulumi

from components.config.aliyun import VPC_CIDR, in_mainland_china
from components.config.errors import ConfigError
from components.config.model import NodePool, StackConfig
from components.config.values import choice, match_pattern
from components.facts import ack as ack_facts
from components.facts import architectures, catalog, cuda, downloads, releases
from components.facts.cuda import CUDA_VERSION_RE

KUBERNETES_MIRRORS = ("auto", "aliyun", "upstream")


_K8S_VERSION_RE = re.compile(r"^1\.(\d{2})\.\d{1,2}$")


# The NVIDIA Container Toolkit lines step 20 is tested with (tests/scripts/test_runtime_real.py runs
# the real nvidia-ctk 1.17.8 and 1.18.0): 1.17 edits config.toml, 1.18 writes a drop-in.
_TOOLKIT_VERSION_RE = re.compile(r"^1\.1[78]\.\d{1,2}$")


SUPPORTED_TOOLKITS = "a 1.17.x or 1.18.x release (the supported NVIDIA Container Toolkit lines), e.g. 1.17.8"


_IMAGE_TAG_RE = re.compile(r"^v\d+\.\d+\.\d+$")


# A registry host, or containerd's _default host namespace (every registry without its own).
_REGISTRY_RE = re.compile(r"^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d+)?|_default)$")


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


# Registries the cluster pulls from that are often unreachable from mainland China (registry.k8s.io:
# NFD's image; kubeadm's own come from Aliyun's mirror there).
_FOREIGN_REGISTRIES = ("docker.io", "nvcr.io", "registry.k8s.io")


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
            raise ConfigError(
                f"registryMirrors.{registry}", registry, "a registry host such as docker.io or nvcr.io, or _default (all)"
            )
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
        # Aliyun's mirrors answer from inside Aliyun's network in every cn-* region, Hong Kong too.
        return "aliyun" if region.startswith("cn-") else "upstream"
    if value == "upstream" and in_mainland_china(region):
        pulumi.log.warn(
            f"gpu-k8s:kubernetesMirror upstream in {region}: pkgs.k8s.io, registry.k8s.io and NVIDIA's package repository are "
            "often unreachable or slow from mainland China, and a node step times out after billing; auto (or aliyun) "
            "uses Aliyun's mirrors there."
        )
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


# Ranges pods can never use (IANA IPv4 Special-Purpose Address Registry, RFC 6890): this
# network, loopback, link-local, multicast, reserved; and Aliyun's 100.64.0.0/10, reserved for
# its services (private DNS 100.100.2.136, metadata 100.100.100.200): pods would lose them.
POD_CIDR_FORBIDDEN: dict[str, str] = {
    "0.0.0.0/8": "'this network' (RFC 1122), never a destination",
    "127.0.0.0/8": "loopback: every node routes it to itself",
    "169.254.0.0/16": "link-local (RFC 3927), never forwarded",
    "224.0.0.0/4": "multicast (RFC 5771), not host addresses",
    "240.0.0.0/4": "reserved (RFC 1112); most stacks drop it",
    "100.64.0.0/10": "reserved by Alibaba Cloud for its services (private DNS 100.100.2.136, metadata 100.100.100.200)",
}


def check_pod_cidr_special(pod_cidr: str) -> None:
    net = ipaddress.ip_network(pod_cidr)
    for special, what in POD_CIDR_FORBIDDEN.items():
        if net.overlaps(ipaddress.ip_network(special)):
            raise ConfigError(
                "podCidr",
                pod_cidr,
                "a private range outside the VPC and Service ranges, e.g. 10.244.0.0/16 or 172.20.0.0/16",
                reason=f"it overlaps {special}, {what}.",
            )


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
    check_pod_cidr_special(cidr)
    check_pod_cidr_overlaps(cidr, service_cidr=ack_facts.SERVICE_CIDR if ack else SERVICE_CIDR)
    return cidr


_KNOWN_SCHEMES = ("http", "ftp", "ftps", "sftp", "s3", "oss", "file", "git", "ssh")


def check_grid_driver_url(raw: str | None) -> None:
    """gridDriverUrl: https, a URL, nothing a shell would split. The value is never shown."""
    if not raw or raw == OFFLINE_SECRET_MARKER:
        return
    if not raw.startswith("https://"):
        # Name the scheme only when it is a known one: text before a colon may be a token.
        scheme = raw.split(":", 1)[0].lower() if ":" in raw else ""
        problem = f"scheme {scheme!r} is not https" if scheme in _KNOWN_SCHEMES else "it is not an https:// URL"
    elif not _SAFE_URL_RE.match(raw):
        problem = "it is not host/path, or it holds a space, quote or shell character"
    elif _port_error(raw):
        problem = "its port is not 1-65535"
    else:
        return
    raise ConfigError(
        "gridDriverUrl",
        "[secret]",
        "an https:// URL of a GRID .run installer, without spaces or quotes",
        reason=f"{problem}.",
    )


def check_grid_install_path(
    pools: tuple[NodePool, ...], pool_keys: tuple[str, ...], grid_url_set: bool, grid_driver_version: str
) -> None:
    """A vGPU family without an Aliyun GRID plugin (vgn5i, a family the catalog does not know)
    gets its driver only from gridDriverUrl: without it step 11 fails after the node bills.
    With it, gridDriverVersion must say which driver that is (no plugin default to assume)."""
    for pool, key in zip(pools, pool_keys, strict=True):
        if pool.profile.kind != catalog.VGPU or pool.profile.grid_plugin is not None:
            continue
        if not grid_url_set:
            with_plugin = sorted(f for f, fam in catalog.FAMILIES.items() if fam.grid_plugin)
            raise ConfigError(
                key,
                pool.instance_type,
                f"a vGPU family Aliyun's GRID plugin installs ({', '.join(with_plugin)}), or set gpu-k8s:gridDriverUrl",
                reason=f"{pool.profile.family} has no GRID install path without gridDriverUrl (a GRID .run installer you "
                "obtained from Aliyun); step 11 would stop 'no way to install the GRID driver' after the node bills.",
            )
        if not grid_driver_version:
            raise ConfigError(
                "gridDriverVersion",
                "",
                f"the version of the GRID .run gridDriverUrl installs on {pool.profile.family}, e.g. 470.256.03",
                reason=f"Aliyun's plugin does not install on {pool.profile.family}, so no default version can be assumed "
                "for the CUDA check.",
            )


def check_grid_driver_version_source(grid_driver_version: str, grid_url_set: bool, pools: tuple[NodePool, ...]) -> None:
    """gridDriverVersion describes the .run gridDriverUrl brings; without it Aliyun's plugin installs its own."""
    plugin_versions = {cuda.grid_driver_for(p.profile) for p in pools if p.profile.kind == catalog.VGPU}
    if grid_driver_version and not grid_url_set and plugin_versions != {grid_driver_version}:
        raise ConfigError(
            "gridDriverVersion",
            grid_driver_version,
            "empty, or set together with gpu-k8s:gridDriverUrl (the GRID .run of that version)",
            reason=f"without gridDriverUrl Aliyun's plugin installs its own GRID driver ({cuda.GRID_DRIVER_DEFAULT}; "
            f"{cuda.GRID_DRIVER_BY_FAMILY['sgn8ia']} on sgn8ia), so the CUDA check would trust a version the node never gets.",
        )


def check_drivers_fit_gpus(
    driver_version: str, grid_driver_version: str, pools: tuple[NodePool, ...], *, driver_key: str = "driverVersion"
) -> None:
    """Every pool's driver must drive its GPU generation (R580 is the last for Pascal and Volta;
    Ada needs R520 or newer); a generation the catalog does not know is warned."""
    for pool in pools:
        profile = pool.profile
        version = cuda.node_driver(profile, driver_version, grid_driver_version)
        key = "gridDriverVersion" if profile.driver == catalog.GRID else driver_key
        if profile.generation is None:
            pulumi.log.warn(
                f"gpu-k8s:{key} {version} on {pool.instance_type}: the GPU generation of family {profile.family} is not "
                "in the catalog, so whether that driver branch drives it is unchecked (R580 is the last branch for "
                "Maxwell, Pascal and Volta; Ada and Hopper need R520+, Blackwell R570+)."
            )
            continue
        problem = architectures.support_error(profile.generation, version, profile.gpu_model)
        if problem:
            gpu = profile.gpu_model or profile.generation
            raise ConfigError(
                key,
                version,
                architectures.supported_branches(profile.generation, profile.gpu_model),
                reason=f"{pool.instance_type} has {gpu} ({profile.generation}): {problem}.",
            )


def _port_error(url: str) -> str | None:
    m = re.match(r"^https?://[^/:]+:(\d+)", url)
    if m and not 1 <= int(m.group(1)) <= 65535:
        return f"port {m.group(1)} is not a TCP port (1-65535)."
    return None


def check_registry_mirror_urls(mirrors: dict[str, str]) -> None:
    for registry, url in mirrors.items():
        bad_port = _port_error(url)
        if bad_port:
            raise ConfigError(f"registryMirrors.{registry}", url, "an http(s) URL whose port is 1-65535", reason=bad_port)
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
    missing = [] if "_default" in mirrors else [r for r in _FOREIGN_REGISTRIES if r not in mirrors]
    if in_mainland_china(region) and missing:
        pulumi.log.warn(
            f"{region} is in mainland China, where {', '.join(missing)} are often unreachable; the flannel, device "
            "plugin, feature discovery and GPU test images come from them. If pulls fail, set gpu-k8s:registryMirrors "
            "(README)."
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
    check_release("prometheusVersion", loaded.prometheus_version)
    if loaded.install_cuda_toolkit:
        check_release("cudaToolkitVersion", loaded.cuda_toolkit_version)


def parse_cuda_toolkit_version(raw: str) -> str:
    return match_pattern("cudaToolkitVersion", raw, CUDA_VERSION_RE, "a CUDA version MAJOR.MINOR such as 12.2")


def parse_flannel_version(raw: str) -> str:
    return match_pattern("flannelVersion", raw, _IMAGE_TAG_RE, "an image tag such as v0.26.7")
