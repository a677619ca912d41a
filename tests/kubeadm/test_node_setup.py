"""Node setup hardening (issue 10), with stub commands on PATH (tests/stubs.py).

apt serialised across parallel steps, bounded downloads, verified keys and driver, kernel
headers that follow kernel upgrades, Docker mirrors and non-GPU nodes. The real-binary
matrix for step 20 is tests/scripts/test_runtime_real.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from helpers import env_of

from components import config
from components.facts import catalog, downloads
from components.kubeadm import bootstrap
from tests.scripts.test_script_behaviour import (
    APT_GET,
    CONTAINERD,
    CONTAINERD_DEFAULT,
    CURL,
    DPKG,
    FAKE_RUN,
    FAST,
    GPG,
    KUBE,
    KUBEADM_VERSION,
    LSMOD,
    LSPCI_P4,
    NVIDIA_CTK,
    NVIDIA_SMI,
    RUNTIME,
    TESLA,
    defer,
    failed,
    ok,
    write,
)
from tests.stubs import SCRIPTS_DIR, StubBin


@pytest.fixture
def rt(tmp_path: Path) -> StubBin:
    """A node before step 20 (as test_script_behaviour's fixture of the same name)."""
    sb = StubBin(tmp_path)
    write(sb.state / "containerd-default.toml", CONTAINERD_DEFAULT)
    sb.add("containerd", body=CONTAINERD)
    defer(sb, "containerd", "containerd")
    sb.add("apt-get", body=APT_GET).add("curl", body=CURL).add("gpg", body=GPG)
    sb.add("nvidia-ctk", body=NVIDIA_CTK).add("systemctl")
    write(sb.root / "etc/os-release", 'VERSION_ID="22.04"\nVERSION_CODENAME=jammy\n')
    (sb.root / "etc/apt/sources.list.d").mkdir(parents=True)
    return sb


# apt-get that fails when another apt-get runs at the same time (as apt's lists lock does)
# and leaves a mark, so an overlap shows even when a retry later succeeds.
EXCLUSIVE_APT_GET = (
    r"""
if ! mkdir "$STUB_STATE/apt-busy" 2>/dev/null; then
  echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)" >&2
  touch "$STUB_STATE/apt-overlap"; exit 100
fi
trap 'rm -r "$STUB_STATE/apt-busy"' EXIT
sleep 0.15
"""
    + APT_GET
)


def _start(sb: StubBin, script: str, env: dict[str, str]) -> subprocess.Popen:
    full = {
        "PATH": str(sb.dir),
        "HOME": str(sb.state),
        "STUB_STATE": str(sb.state),
        "GPU_K8S_ROOT": str(sb.root),
        "LANG": "C.UTF-8",
        **env,
    }
    return subprocess.Popen(
        ["bash", str(SCRIPTS_DIR / script)], env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_parallel_steps_never_run_apt_get_at_once(rt: StubBin):
    node = rt  # step 20's stubs, plus what step 30 needs besides apt
    node.add("modprobe").add("sysctl").add("swapon").add("swapoff").add("apt-mark")
    node.add("kubeadm", body=KUBEADM_VERSION)
    write(node.root / "etc/fstab", "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    for name in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables"):
        write(node.root / "proc/sys" / name, "1\n")
    for module in ("overlay", "br_netfilter"):
        (node.root / "sys/module" / module).mkdir(parents=True)
    node.add("apt-get", body=EXCLUSIVE_APT_GET)
    runtime = _start(node, "20-container-runtime.sh", RUNTIME)
    packages = _start(node, "30-kube-packages.sh", KUBE)
    for proc in (runtime, packages):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    assert not (node.state / "apt-overlap").exists(), "two apt-get ran at the same time"
    updates = [c for c in node.calls("apt-get") if "update" in c]
    assert len(updates) >= 2  # both steps refreshed the lists, one after the other
    assert (node.root / "var/lib/gpu-k8s/apt.lock").exists()


def test_apt_update_backs_off_and_gives_up(rt: StubBin):
    (rt.state / "apt-fail-update").touch()
    rt.add("sleep", body='echo "$1" >>"$STUB_STATE/slept"')
    result = rt.run("20-container-runtime.sh", {**RUNTIME, "POLL_SECONDS": "5"})
    assert result.returncode == 1
    assert "apt-get update failed 5 times" in result.stderr
    assert (rt.state / "slept").read_text().split() == ["5", "10", "15", "20"]


def test_apt_lock_wait_is_bounded(rt: StubBin):
    lock = rt.root / "var/lib/gpu-k8s/apt.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:  # another step holds the gpu-k8s apt lock (flock(2), as flock(1) takes it)
        fcntl.flock(held, fcntl.LOCK_EX)
        result = rt.run("20-container-runtime.sh", {**RUNTIME, "APT_LOCK_WAIT": "0"})
    assert result.returncode == 1
    assert "another gpu-k8s step held /var/lib/gpu-k8s/apt.lock for over 0s" in result.stderr
    assert not rt.calls("apt-get")


# ================================================================ downloads and keys

BOUNDED = ("--connect-timeout", "--speed-limit", "--speed-time", "--retry")


def test_no_script_calls_curl_except_through_the_bounded_helper():
    for path in sorted(SCRIPTS_DIR.glob("*.sh")):
        for line in path.read_text().splitlines():
            code = line.split("#", 1)[0]
            assert not re.search(r"(^|[\s|;&(])curl\s", code), f"{path.name}: unbounded curl: {line.strip()}"
    lib = (SCRIPTS_DIR / "lib/common.sh").read_text()
    helper = next(line for line in lib.splitlines() if line.strip().startswith("curl "))
    assert all(flag in helper for flag in BOUNDED)


def test_runtime_downloads_are_bounded_and_keys_verified(rt: StubBin):
    result = ok(rt.run("20-container-runtime.sh", RUNTIME))
    curls = rt.calls("curl")
    assert curls and all(all(flag in c for flag in BOUNDED) for c in curls)
    assert "NVIDIA Container Toolkit key fingerprint C95B321B61E88C1809C4F759DDCAE044F796ECB0 verified" in result.stderr


def test_runtime_refuses_a_key_with_another_fingerprint(rt: StubBin):
    write(rt.state / "gpg-fpr", "0123456789ABCDEF0123456789ABCDEF01234567")
    failed(
        rt.run("20-container-runtime.sh", RUNTIME),
        "20-container-runtime",
        "NVIDIA Container Toolkit key downloaded has fingerprint 0123456789ABCDEF0123456789ABCDEF01234567",
        "not the published C95B321B61E88C1809C4F759DDCAE044F796ECB0",
    )
    assert not (rt.root / "usr/share/keyrings/nvidia-container-toolkit-keyring.gpg").exists()
    assert not rt.called("apt-get", "install", "nvidia-container-toolkit=1.17.8-1")


@pytest.fixture
def drv(tmp_path: Path) -> StubBin:
    sb = StubBin(tmp_path)
    sb.add("nvidia-smi", body=NVIDIA_SMI)
    sb.add("curl", body=CURL).add("apt-get", body=APT_GET).add("dpkg", body=DPKG)
    sb.add("uname", stdout="5.15.0-91-generic\n")
    write(sb.state / "curl-payload", FAKE_RUN)
    return sb


def test_driver_download_is_bounded_and_unverified_without_a_checksum(drv: StubBin):
    result = ok(drv.run("11-nvidia-driver.sh", TESLA))
    curls = drv.calls("curl")
    assert curls and all(all(flag in c for flag in BOUNDED) for c in curls)
    assert "NVIDIA-Linux-x86_64-535.129.03.run is not checksum-verified" in result.stderr


def test_driver_checksum_verified_when_known(drv: StubBin):
    sha = hashlib.sha256(FAKE_RUN.encode()).hexdigest()
    result = ok(drv.run("11-nvidia-driver.sh", {**TESLA, "DRIVER_SHA256": sha}))
    assert "NVIDIA-Linux-x86_64-535.129.03.run SHA-256 verified" in result.stderr


def test_driver_with_another_checksum_is_refused_and_removed(drv: StubBin):
    failed(
        drv.run("11-nvidia-driver.sh", {**TESLA, "DRIVER_SHA256": "0" * 64}),
        "11-nvidia-driver",
        "expected " + "0" * 64,
        "not NVIDIA's",
    )
    assert not (drv.root / "var/cache/gpu-k8s/NVIDIA-Linux-x86_64-535.129.03.run").exists()
    assert not (drv.state / "installer-runs").exists()


def test_driver_env_carries_a_known_checksum_only(monkeypatch):
    setup = bootstrap.NodeSetup(
        driver_version="535.129.03",
        install_cuda_toolkit=False,
        cuda_toolkit_version="12.2",
        grid_driver_url=None,
        container_toolkit_version="1.17.8",
        package_mirror="aliyun",
        kubernetes_version="1.34.2",
    )
    tesla = catalog.profile_for("ecs.gn6i-c4g1.xlarge")
    assert tesla.driver == catalog.TESLA
    assert "DRIVER_SHA256" not in bootstrap._driver_env(tesla, setup)
    monkeypatch.setitem(downloads.TESLA_RUN_SHA256, "535.129.03", "a" * 64)
    assert bootstrap._driver_env(tesla, setup)["DRIVER_SHA256"] == "a" * 64


def test_plan_warns_that_an_unlisted_tesla_driver_is_unverified(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(config.kubeadm.pulumi.log, "warn", lambda msg, *a, **k: warnings.append(msg))
    pools = config.aliyun.parse_pools("ecs.gn6i-c4g1.xlarge", 1, [], spot=False)
    config.kubeadm.warn_unverified_driver("535.129.03", pools)
    assert len(warnings) == 1 and "download unverified" in warnings[0] and "535.129.03" in warnings[0]
    monkeypatch.setitem(downloads.TESLA_RUN_SHA256, "535.129.03", "a" * 64)
    config.kubeadm.warn_unverified_driver("535.129.03", pools)
    assert len(warnings) == 1


# ================================================================ kernel headers follow upgrades

# dpkg-query -W -f='${Status} ${Package}\n' 'linux-image-generic*' on a 22.04 HWE image
DPKG_QUERY_HWE = r"""
[[ "$*" == *"linux-image-generic*"* ]] || exit 1
printf '%s\n' "install ok installed linux-image-generic-hwe-22.04" "unknown ok not-installed linux-image-generic"
"""


@pytest.fixture
def prep(tmp_path: Path) -> StubBin:
    sb = StubBin(tmp_path)
    sb.add("lspci", stdout=LSPCI_P4).add("lsmod", stdout=LSMOD)
    sb.add("uname", stdout="6.8.0-49-generic\n")
    sb.add("apt-get", body=APT_GET).add("dpkg", body=DPKG)
    sb.add("modprobe").add("update-initramfs").add("systemd-run")
    return sb


def test_driver_prepare_installs_the_headers_meta_package_of_the_installed_kernel_meta(prep: StubBin):
    prep.add("dpkg-query", body=DPKG_QUERY_HWE)
    ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}))
    assert prep.called("apt-get", "install", "dkms", "linux-headers-6.8.0-49-generic", "linux-headers-generic-hwe-22.04")
    prep.clear()
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}))
    assert not prep.calls("apt-get")
    assert "build tools and kernel headers already installed, skipping" in result.stderr


def test_driver_prepare_falls_back_to_the_flavour_headers_meta_package(prep: StubBin):
    ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}))  # no dpkg-query answer
    assert prep.called("apt-get", "install", "linux-headers-6.8.0-49-generic", "linux-headers-generic")


def test_kernel_headers_lists_the_running_kernel_and_the_meta_package(tmp_path: Path):
    lib = SCRIPTS_DIR / "lib/common.sh"
    sb = StubBin(tmp_path)
    sb.add("uname", stdout="5.15.0-91-generic\n").add("dpkg-query", body=DPKG_QUERY_HWE)
    out = subprocess.run(
        ["bash", "-c", f'set -euo pipefail; STEP=t; source "{lib}"; kernel_headers'],
        env={"PATH": str(sb.dir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "linux-headers-5.15.0-91-generic\nlinux-headers-generic-hwe-22.04\n"


# ================================================================ Docker mirrors, non-GPU nodes

MIRROR = "https://abc.mirror.aliyuncs.com"


def with_docker(rt: StubBin) -> StubBin:
    rt.add("docker")
    defer(rt, "docker", "docker-ce")
    pending = rt.state / "pending/containerd.io"
    pending.mkdir(parents=True)
    (rt.state / "pending/containerd/containerd").rename(pending / "containerd")
    write(rt.state / "containerd-version", "2.1.5")
    return rt


def test_docker_pulls_through_the_docker_hub_mirror(rt: StubBin):
    env = {**RUNTIME, "INSTALL_DOCKER": "true", "REGISTRY_MIRRORS": f"docker.io={MIRROR};quay.io=https://q.example.com"}
    ok(with_docker(rt).run("20-container-runtime.sh", env))
    daemon = json.loads((rt.root / "etc/docker/daemon.json").read_text())
    assert daemon["registry-mirrors"] == [MIRROR]
    assert "nvidia" in daemon["runtimes"]  # nvidia-ctk's edit is kept
    assert rt.called("systemctl", "restart", "docker")
    rt.clear()
    ok(rt.run("20-container-runtime.sh", env))
    assert not rt.called("systemctl", "restart", "docker")


def test_docker_without_a_docker_hub_mirror_keeps_daemon_json_as_nvidia_ctk_wrote_it(rt: StubBin):
    ok(with_docker(rt).run("20-container-runtime.sh", {**RUNTIME, "INSTALL_DOCKER": "true"}))
    assert "registry-mirrors" not in json.loads((rt.root / "etc/docker/daemon.json").read_text())


def test_non_gpu_node_gets_containerd_without_the_nvidia_runtime(rt: StubBin):
    result = ok(rt.run("20-container-runtime.sh", {**RUNTIME, "NVIDIA_RUNTIME": "false"}))
    config = (rt.root / "etc/containerd/config.toml").read_text()
    assert 'default_runtime_name = "runc"' in config and "runtimes.nvidia" not in config
    assert "SystemdCgroup = true" in config and 'config_path = "/etc/containerd/certs.d"' in config
    assert not rt.calls("nvidia-ctk") and not rt.calls("curl")
    assert not rt.called("apt-get", "install", "nvidia-container-toolkit=1.17.8-1")
    assert "runc stays containerd's default runtime" in result.stderr


def test_program_passes_nvidia_runtime_per_node(program):
    run = program("mixed", controlPlaneInstanceType="ecs.g7.large")
    assert env_of(run.named("control-plane-bootstrap-container-runtime"))["NVIDIA_RUNTIME"] == "false"
    assert env_of(run.named("train-0-bootstrap-container-runtime"))["NVIDIA_RUNTIME"] == "true"


# ================================================================ supported toolkit lines (plan time)


@pytest.mark.parametrize("value", ["1.17.8", "1.17.0", "1.18.0", "1.18.2"])
def test_container_toolkit_versions_supported(value):
    assert config.kubeadm.parse_container_toolkit_version(value) == value


@pytest.mark.parametrize("value", ["1.16.2", "1.19.0", "2.0.0", "1.17", "latest", ""])
def test_container_toolkit_versions_outside_the_tested_lines_rejected(value):
    with pytest.raises(config.ConfigError) as err:
        config.kubeadm.parse_container_toolkit_version(value)
    assert err.value.key == "containerToolkitVersion"
    assert "1.17.x or 1.18.x" in str(err.value)
