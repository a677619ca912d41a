"""Node setup hardening (issue 10), with stub commands on PATH (tests/stubs.py).

apt serialised across parallel steps, bounded downloads, verified keys and driver, kernel
headers that follow kernel upgrades, Docker mirrors and non-GPU nodes. The real-binary
matrix for step 20 is tests/test_runtime_real.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.stubs import SCRIPTS_DIR, StubBin
from tests.test_script_behaviour import (
    APT_GET,
    CONTAINERD,
    CONTAINERD_DEFAULT,
    CURL,
    GPG,
    KUBE,
    KUBEADM_VERSION,
    NVIDIA_CTK,
    RUNTIME,
    defer,
    write,
)


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
    holder = subprocess.Popen(["flock", str(lock), "sleep", "10"])
    try:
        result = rt.run("20-container-runtime.sh", {**RUNTIME, "APT_LOCK_WAIT": "0"})
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "another gpu-k8s step held /var/lib/gpu-k8s/apt.lock for over 0s" in result.stderr
    assert not rt.calls("apt-get")
