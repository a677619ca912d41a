"""Behaviour of the node scripts in components/scripts/, with stub commands on PATH.

Every script is run for real by bash; only the tools it calls are stubs (tests/stubs.py).
Stubs keep state in $STUB_STATE ("the driver is installed now") so that a second run can
be checked for doing nothing twice, and host paths live under $GPU_K8S_ROOT (a temp dir).
Retry pauses and poll intervals are set to 0 through the scripts' documented knobs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from helpers import FIXTURES as TESTS_FIXTURES

from components.steps import render_script
from tests.stubs import SCRIPTS_DIR, StubBin
from tools.mock_cluster import KUBECTL_STUB_BODY

FIXTURES = TESTS_FIXTURES / "nvidia-smi"
FAST = {"POLL_SECONDS": "0"}

# --- shared stub bodies (bash) -------------------------------------------------------------

# apt-get: "install" records each package (with its pinned version) as $STUB_STATE/pkg-<name>
# and moves any command deferred to that package onto PATH; apt-fail-<cmd> makes it fail.
APT_GET = r"""
cmd=""; for a in "$@"; do case "$a" in update|install) cmd="$a"; break;; esac; done
if [[ -e "$STUB_STATE/apt-fail-$cmd" ]]; then echo "E: simulated apt-get $cmd failure" >&2; exit 100; fi
if [[ "$cmd" == install ]]; then
  seen=0
  for a in "$@"; do
    if [[ $seen == 1 && "$a" != -* && "$a" != *::* ]]; then
      p="${a##*/}"; v=""; [[ "$p" == *=* ]] && v="${p#*=}"; p="${p%%=*}"; [[ "$p" == *.deb ]] && p="${p%%_*}"
      printf '%s' "$v" >"$STUB_STATE/pkg-$p"
      if [[ -d "$STUB_STATE/pending/$p" ]]; then mv "$STUB_STATE/pending/$p"/* "$(dirname "$0")/"; fi
    fi
    [[ "$a" == install ]] && seen=1
  done
fi
"""
DPKG = r"""
if [[ "$1" == -s ]]; then
  if [[ -e "$STUB_STATE/pkg-$2" ]]; then echo "Status: install ok installed"; exit 0; fi
  echo "dpkg-query: package '$2' is not installed" >&2; exit 1
fi
"""
# curl: writes $STUB_STATE/curl-payload (or a dummy) to the -o file; keeps a -K - config.
CURL = r"""
out=""; prev=""; for a in "$@"; do [[ "$prev" == -o ]] && out="$a"; prev="$a"; done
if [[ " $* " == *" -K - "* ]]; then cat >"$STUB_STATE/curl-config"; fi
if [[ -e "$STUB_STATE/curl-fail" ]]; then echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; fi
if [[ -n "$out" ]]; then
  if [[ -e "$STUB_STATE/curl-payload" ]]; then cp "$STUB_STATE/curl-payload" "$out"; else echo "payload ${!#}" >"$out"; fi
fi
"""
# gpg: --dearmor writes a keyring; --show-keys lists the key the curl stub "downloaded"
# (its URL is in the file) with that publisher's published fingerprint, or $STUB_STATE/gpg-fpr.
GPG = r"""
out=""; prev=""; for a in "$@"; do [[ "$prev" == -o ]] && out="$a"; prev="$a"; done
if [[ -n "$out" ]]; then echo keyring >"$out"; fi
if [[ " $* " == *" --show-keys "* ]]; then
  case "$(cat "${!#}")" in
    *libnvidia-container*) fpr=C95B321B61E88C1809C4F759DDCAE044F796ECB0;;
    *docker*) fpr=9DC858229FC7DD38854AE2D88D81803C0EBFCD88;;
    *kubernetes*|*k8s*) fpr=DE15B14486CD377B9E876E1A234654DA9A296436;;
    *) exit 2;;
  esac
  [[ -e "$STUB_STATE/gpg-fpr" ]] && fpr=$(cat "$STUB_STATE/gpg-fpr")
  printf 'pub:-:4096:1:%s:1506556193:::-:::scSC::::::23::0:\nfpr:::::::::%s:\n' "${fpr: -16}" "$fpr"
fi
"""


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def failed(result: subprocess.CompletedProcess, step: str, *needles: str) -> subprocess.CompletedProcess:
    assert result.returncode != 0, f"expected a failure\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert f"[gpu-k8s {step}] ERROR:" in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, f"{needle!r} not in stderr:\n{result.stderr}"
    return result


def defer(sb: StubBin, command: str, package: str) -> None:
    """Take a stubbed command off PATH until apt-get installs ``package``."""
    pending = sb.state / "pending" / package
    pending.mkdir(parents=True, exist_ok=True)
    shutil.move(str(sb.dir / command), str(pending / command))


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


@pytest.fixture
def sb(tmp_path: Path) -> StubBin:
    return StubBin(tmp_path)


# ================================================================ 00-wait-boot.sh


@pytest.fixture
def boot(sb: StubBin) -> StubBin:
    sb.add("cloud-init", stdout="..\nstatus: done\n")
    sb.add("fuser", exit_code=1)  # no process holds the file
    sb.add("uname", stdout="5.15.0-91-generic\n")
    write(sb.root / "etc/os-release", 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nVERSION_ID="22.04"\nVERSION_CODENAME=jammy\n')
    for lock in ("var/lib/dpkg/lock-frontend", "var/lib/dpkg/lock", "var/lib/apt/lists/lock"):
        write(sb.root / lock, "")
    return sb


def test_wait_boot_waits_for_cloud_init_then_locks(boot: StubBin):
    result = ok(boot.run("00-wait-boot.sh", FAST))
    assert boot.calls("cloud-init") == [["cloud-init", "status", "--wait"]]
    assert len(boot.calls("fuser")) == 3  # one per existing lock file
    assert result.stdout == ""
    assert "kernel 5.15.0-91-generic, Ubuntu 22.04.4 LTS" in result.stderr
    assert "WARNING" not in result.stderr


def test_wait_boot_accepts_cloud_init_exit_2(boot: StubBin):
    boot.add("cloud-init", exit_code=2)
    result = ok(boot.run("00-wait-boot.sh", FAST))
    assert "recoverable errors" in result.stderr


def test_wait_boot_fails_when_cloud_init_failed(boot: StubBin):
    boot.add("cloud-init", exit_code=1)
    failed(boot.run("00-wait-boot.sh", FAST), "00-wait-boot", "cloud-init failed (exit 1)", "cloud-init-output.log")
    assert not boot.calls("fuser")


def test_wait_boot_skips_missing_cloud_init(boot: StubBin):
    (boot.dir / "cloud-init").unlink()
    result = ok(boot.run("00-wait-boot.sh", FAST))
    assert "cloud-init not installed, skipping" in result.stderr


def test_wait_boot_waits_until_the_dpkg_lock_is_released(boot: StubBin):
    # unattended-upgrades holds the lock for the first 4 checks
    boot.add(
        "fuser",
        body='n=$(cat "$STUB_STATE/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$STUB_STATE/n"\n'
        'if ((n < 4)); then echo " 4242"; exit 0; fi; exit 1',
    )
    result = ok(boot.run("00-wait-boot.sh", FAST))
    assert "lock held by PID(s) 4242" in result.stderr
    assert "apt/dpkg locks are free" in result.stderr
    assert len(boot.calls("fuser")) > 3


def test_wait_boot_lock_wait_is_bounded(boot: StubBin):
    boot.add("fuser", stdout=" 4242")
    result = ok(boot.run("00-wait-boot.sh", {**FAST, "LOCK_WAIT_SECONDS": "0"}))
    assert "still held after 0s" in result.stderr


def test_wait_boot_warns_about_other_releases(boot: StubBin):
    write(boot.root / "etc/os-release", 'PRETTY_NAME="Ubuntu 24.04 LTS"\nVERSION_ID="24.04"\n')
    result = ok(boot.run("00-wait-boot.sh", FAST))
    assert "target Ubuntu 22.04 (found '24.04')" in result.stderr


# ================================================================ 10-driver-prepare.sh

LSPCI_P4 = "00:00.0 Host bridge: Intel Corporation 440FX\n00:07.0 3D controller: NVIDIA Corporation GP104GL [Tesla P4] (rev a1)\n"
LSMOD = "Module                  Size  Used by\nbr_netfilter           32768  0\n"


@pytest.fixture
def prep(sb: StubBin) -> StubBin:
    sb.add("lspci", stdout=LSPCI_P4)
    sb.add("uname", stdout="5.15.0-91-generic\n")
    sb.add("apt-get", body=APT_GET).add("dpkg", body=DPKG)
    sb.add("lsmod", stdout=LSMOD, body='if [[ -e "$STUB_STATE/nouveau" ]]; then echo "nouveau 2293760  1"; fi')
    sb.add("modprobe", body='if [[ "$*" == "-r nouveau" ]]; then rm -f "$STUB_STATE/nouveau"; fi')
    sb.add("update-initramfs").add("systemd-run")
    return sb


def test_driver_prepare_tesla_installs_build_deps_and_blacklists_nouveau(prep: StubBin):
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}))
    assert prep.called("apt-get", "update")
    assert prep.called("apt-get", "install", "gcc", "make", "dkms", "linux-headers-5.15.0-91-generic")
    blacklist = prep.root / "etc/modprobe.d/blacklist-nouveau.conf"
    assert blacklist.read_text() == "blacklist nouveau\noptions nouveau modeset=0\n"
    assert prep.called("update-initramfs", "-u")
    assert not prep.calls("systemd-run")
    assert result.stdout == "ok\n"
    assert "found: 00:07.0 3D controller: NVIDIA Corporation GP104GL [Tesla P4]" in result.stderr


def test_driver_prepare_is_idempotent(prep: StubBin):
    env = {**FAST, "GPU_DRIVER": "tesla"}
    ok(prep.run("10-driver-prepare.sh", env))
    prep.clear()
    result = ok(prep.run("10-driver-prepare.sh", env))
    assert not prep.calls("apt-get")
    assert not prep.calls("update-initramfs")
    assert "already installed, skipping" in result.stderr
    assert "nouveau already blacklisted, skipping" in result.stderr


def test_driver_prepare_grid_needs_no_build_tools(prep: StubBin):
    ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}))
    assert not prep.calls("apt-get")
    assert (prep.root / "etc/modprobe.d/blacklist-nouveau.conf").exists()


def test_driver_prepare_without_nvidia_device_fails(prep: StubBin):
    prep.add("lspci", stdout="00:00.0 Host bridge: Intel Corporation 440FX\n00:05.0 Ethernet controller: Red Hat virtio\n")
    failed(
        prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}),
        "10-driver-prepare",
        "no NVIDIA GPU on the PCI bus of this instance",
    )
    assert not prep.calls("apt-get")


def test_driver_prepare_unloads_nouveau_when_it_can(prep: StubBin):
    (prep.state / "nouveau").touch()
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}))
    assert prep.called("modprobe", "-r", "nouveau")
    assert "unloaded nouveau" in result.stderr
    assert not prep.calls("systemd-run")
    assert result.stdout == "ok\n"


def test_driver_prepare_reboots_when_nouveau_is_in_use(prep: StubBin):
    (prep.state / "nouveau").touch()
    write(prep.root / "etc/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\noptions nouveau modeset=0\n")
    prep.add("modprobe", exit_code=1, body='echo "modprobe: FATAL: Module nouveau is in use." >&2')
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}))
    assert prep.calls("update-initramfs") == [["update-initramfs", "-u"]]
    assert prep.calls("systemd-run") == [["systemd-run", "--on-active=5", "systemctl", "reboot"]]
    assert (prep.root / "run/gpu-k8s/reboot-pending").exists()
    assert "the next steps wait until the node is back" in result.stderr
    assert result.stdout == "reboot\n"  # tells the Python side to let the reboot happen


def test_driver_prepare_without_nouveau_neither_unloads_nor_reboots(prep: StubBin):
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}))
    assert not prep.calls("modprobe") and not prep.calls("systemd-run")
    assert "nouveau neither loaded nor bound to a device: no reboot needed" in result.stderr
    assert result.stdout == "ok\n"


def test_driver_prepare_reboots_when_nouveau_stays_bound_to_the_gpu(prep: StubBin):
    # modprobe -r returns 0 but the GPU is still driven by nouveau (sysfs): unloading did not work.
    (prep.state / "nouveau").touch()
    (prep.root / "sys/bus/pci/drivers/nouveau/0000:00:07.0").mkdir(parents=True)
    result = ok(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}))
    assert prep.called("modprobe", "-r", "nouveau")
    assert prep.calls("systemd-run") == [["systemd-run", "--on-active=5", "systemctl", "reboot"]]
    assert result.stdout == "reboot\n"


def test_driver_prepare_built_in_nouveau_fails_instead_of_a_useless_reboot(prep: StubBin):
    (prep.root / "sys/bus/pci/drivers/nouveau/0000:00:07.0").mkdir(parents=True)  # bound, no module
    failed(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "grid"}), "10-driver-prepare", "nouveau.modeset=0")
    assert not prep.calls("systemd-run")


def test_driver_prepare_apt_failure_names_the_step(prep: StubBin):
    (prep.state / "apt-fail-install").touch()
    failed(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}), "10-driver-prepare", "apt-get install")


def test_driver_prepare_retries_apt_update(prep: StubBin):
    (prep.state / "apt-fail-update").touch()
    failed(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}), "10-driver-prepare", "update failed 5 times")
    assert len([c for c in prep.calls("apt-get") if "update" in c]) == 5


def test_driver_prepare_rejects_unknown_driver(prep: StubBin):
    failed(prep.run("10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "cuda"}), "10-driver-prepare", "tesla or grid")
    assert not prep.calls()


# ================================================================ 11-nvidia-driver.sh

# nvidia-smi works once a driver is "installed" ($STUB_STATE/driver-installed holds its version).
NVIDIA_SMI = r"""
if [[ ! -e "$STUB_STATE/driver-installed" ]]; then
  echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2; exit 9
fi
case "$*" in *driver_version*) cat "$STUB_STATE/driver-installed"; echo;; esac
"""
FAKE_RUN = """#!/bin/sh
echo "$@" >>"$STUB_STATE/installer-runs"
echo "Verifying archive integrity... OK"
printf '%s' "${FAKE_VERSION:-535.129.03}" >"$STUB_STATE/driver-installed"
"""
FAKE_RUN_VGPU = """#!/bin/sh
echo "$@" >>"$STUB_STATE/installer-runs"
echo "ERROR: Unable to load the kernel module 'nvidia.ko'.  This happens most frequently when this kernel module was"
echo "built against the wrong or improperly configured kernel sources"
exit 1
"""
TESLA = {**FAST, "GPU_DRIVER": "tesla", "DRIVER_VERSION": "535.129.03", "GRID_PLUGIN": "", "INSTALL_CUDA_TOOLKIT": "false"}
GRID = {**FAST, "GPU_DRIVER": "grid", "DRIVER_VERSION": "", "GRID_PLUGIN": "grid_driver_install", "INSTALL_CUDA_TOOLKIT": "false"}
GRID_URL = "https://grid-drivers.example.com/NVIDIA-Linux-x86_64-470.161.03-grid.run?Signature=s3cr3tSIG"
ACS = r"""
case "$*" in
  "--list --local") if [[ -e "$STUB_STATE/plugin-cached" ]]; then echo "grid_driver_install   1.3   Linux"; fi;;
  "--exec --plugin "*) printf '470.161.03' >"$STUB_STATE/driver-installed";;
esac
"""


@pytest.fixture
def drv(sb: StubBin) -> StubBin:
    sb.add("nvidia-smi", body=NVIDIA_SMI)
    sb.add("curl", body=CURL).add("apt-get", body=APT_GET).add("dpkg", body=DPKG)
    sb.add("uname", stdout="5.15.0-91-generic\n")
    write(sb.state / "curl-payload", FAKE_RUN)
    return sb


def installer_runs(sb: StubBin) -> list[str]:
    runs = sb.state / "installer-runs"
    return runs.read_text().splitlines() if runs.exists() else []


def test_tesla_driver_downloads_and_runs_the_run_file_with_dkms(drv: StubBin):
    result = ok(drv.run("11-nvidia-driver.sh", TESLA))
    url = "https://us.download.nvidia.com/tesla/535.129.03/NVIDIA-Linux-x86_64-535.129.03.run"
    [curl] = drv.calls("curl")
    assert url in curl and "--retry" in curl and "--retry-all-errors" in curl
    assert installer_runs(drv) == ["--silent --dkms --no-questions --ui=none"]
    assert (drv.root / "var/cache/gpu-k8s/NVIDIA-Linux-x86_64-535.129.03.run").exists()
    assert drv.called("nvidia-smi", "-pm", "1")
    assert not (drv.dir / "acs-plugin-manager").exists() and not drv.calls("acs-plugin-manager")
    assert result.stdout == "driver_version=535.129.03\n"  # what the GPU checks follow


def test_tesla_driver_never_calls_the_grid_plugin(drv: StubBin):
    drv.add("acs-plugin-manager", body=ACS)
    ok(drv.run("11-nvidia-driver.sh", {**TESLA, "GRID_PLUGIN": "grid_driver_install"}))
    assert not drv.calls("acs-plugin-manager")
    assert len(installer_runs(drv)) == 1


def test_tesla_driver_is_idempotent(drv: StubBin):
    ok(drv.run("11-nvidia-driver.sh", TESLA))
    drv.clear()
    result = ok(drv.run("11-nvidia-driver.sh", TESLA))
    assert not drv.calls("curl")
    assert len(installer_runs(drv)) == 1
    assert "Tesla driver 535.129.03 already installed, skipping" in result.stderr


def test_tesla_driver_replaces_another_version(drv: StubBin):
    write(drv.state / "driver-installed", "470.82.01")
    result = ok(drv.run("11-nvidia-driver.sh", TESLA))
    assert "replacing driver 470.82.01 with 535.129.03" in result.stderr
    assert len(installer_runs(drv)) == 1


NVRM_UNSUPPORTED = (
    "[   12.345678] NVRM: The NVIDIA GPU 0000:00:07.0 (PCI ID: 10de:1bb3)\n"
    "[   12.345679] NVRM: installed in this system is not supported by the\n"
    "[   12.345680] NVRM: NVIDIA 535.129.03 driver release.\n"
)


def test_nvidia_ko_on_a_compute_node_names_what_the_node_shows(drv: StubBin):
    """The Tesla .run runs only on compute families: the hint is the kernel's reason, never GRID."""
    write(drv.state / "curl-payload", FAKE_RUN_VGPU)
    drv.add("lsmod", stdout="Module                  Size  Used by\nnouveau              2306048  1\n")
    drv.add("mokutil", stdout="SecureBoot enabled\n")
    drv.add("dmesg", stdout=NVRM_UNSUPPORTED)
    result = failed(
        drv.run("11-nvidia-driver.sh", TESLA),
        "11-nvidia-driver",
        "Unable to load the kernel module 'nvidia.ko'\" on this compute node",
        "nouveau is still bound to the GPU",
        "Secure Boot is enabled and refuses the unsigned module",
        "the GPU is not supported by the 535.129.03 driver branch",
        "[dmesg: [   12.345678] NVRM: The NVIDIA GPU",
    )
    assert "GRID" not in result.stderr


def test_nvidia_ko_hint_also_comes_from_the_installer_log(drv: StubBin):
    write(drv.state / "curl-payload", "#!/bin/sh\necho 'ERROR: installation failed, see log'\nexit 1\n")
    write(
        drv.root / "var/log/nvidia-installer.log", "-> Kernel module load error: Unable to load the kernel module 'nvidia.ko'.\n"
    )
    result = failed(
        drv.run("11-nvidia-driver.sh", TESLA),
        "11-nvidia-driver",
        "none of the usual causes is visible",
        "check 'dmesg | grep -i nvrm' (the kernel's reason), Secure Boot ('mokutil --sb-state'), nouveau still bound",
        "that driver 535.129.03 supports this GPU",
    )
    assert "GRID" not in result.stderr


def test_tesla_installer_failure_is_reported(drv: StubBin):
    write(drv.state / "curl-payload", "#!/bin/sh\necho 'ERROR: gcc not found'\nexit 1\n")
    result = failed(drv.run("11-nvidia-driver.sh", TESLA), "11-nvidia-driver", "the NVIDIA installer failed", "gcc not found")
    assert "GRID" not in result.stderr


def test_tesla_download_failure_names_the_step(drv: StubBin):
    (drv.state / "curl-fail").touch()
    failed(drv.run("11-nvidia-driver.sh", TESLA), "11-nvidia-driver", "download of https://us.download.nvidia.com/tesla/")
    assert not installer_runs(drv)


def test_grid_driver_runs_aliyuns_plugin_sequence(drv: StubBin):
    drv.add("acs-plugin-manager", body=ACS)
    (drv.state / "plugin-cached").touch()
    result = ok(drv.run("11-nvidia-driver.sh", GRID))
    assert drv.calls("acs-plugin-manager") == [
        ["acs-plugin-manager", "--list", "--local"],
        ["acs-plugin-manager", "--remove", "--plugin", "grid_driver_install"],
        ["acs-plugin-manager", "--exec", "--plugin", "grid_driver_install"],
    ]
    assert not drv.calls("curl") and not installer_runs(drv)  # never the Tesla .run
    assert drv.called("nvidia-smi", "-pm", "1")
    assert result.stdout == "driver_version=470.161.03\n"  # what the GPU checks follow


def test_grid_plugin_not_cached_is_not_removed(drv: StubBin):
    drv.add("acs-plugin-manager", body=ACS)
    ok(drv.run("11-nvidia-driver.sh", {**GRID, "GRID_PLUGIN": "gpu_grid_driver_install"}))
    assert drv.calls("acs-plugin-manager") == [
        ["acs-plugin-manager", "--list", "--local"],
        ["acs-plugin-manager", "--exec", "--plugin", "gpu_grid_driver_install"],
    ]


def test_grid_driver_is_idempotent(drv: StubBin):
    drv.add("acs-plugin-manager", body=ACS)
    ok(drv.run("11-nvidia-driver.sh", GRID))
    drv.clear()
    result = ok(drv.run("11-nvidia-driver.sh", GRID))
    assert not drv.calls("acs-plugin-manager")
    assert "skipping the GRID install" in result.stderr


def test_grid_plugin_failure_names_the_step(drv: StubBin):
    drv.add("acs-plugin-manager", exit_code=1, body='[[ "$1" == --exec ]] || exit 0')
    failed(
        drv.run("11-nvidia-driver.sh", GRID), "11-nvidia-driver", "acs-plugin-manager --exec --plugin grid_driver_install failed"
    )


def test_grid_plugin_that_leaves_no_working_driver_fails(drv: StubBin):
    drv.add("acs-plugin-manager")  # "succeeds" without installing anything
    failed(drv.run("11-nvidia-driver.sh", GRID), "11-nvidia-driver", "grid driver is installed but nvidia-smi fails")
    assert not drv.called("nvidia-smi", "-pm", "1")


def test_grid_driver_from_url_keeps_the_url_secret(drv: StubBin):
    write(drv.state / "curl-payload", FAKE_RUN)
    (drv.state / "pkg-dkms").touch()
    drv.add("dkms")
    result = ok(drv.run("11-nvidia-driver.sh", {**GRID, "FAKE_VERSION": "470.161.03"}, stdin=GRID_URL + "\n"))
    [curl] = drv.calls("curl")
    assert "-K" in curl and "-" in curl
    assert not any(GRID_URL in arg or "s3cr3t" in arg for call in drv.calls() for arg in call)
    assert (drv.state / "curl-config").read_text() == f'url = "{GRID_URL}"\n'
    assert "s3cr3t" not in result.stdout + result.stderr
    assert installer_runs(drv) == ["--silent --dkms --no-questions --ui=none"]
    assert not (drv.root / "var/cache/gpu-k8s/NVIDIA-Linux-x86_64-grid.run").exists()


def test_grid_driver_from_url_installs_build_tools_first(drv: StubBin):
    ok(drv.run("11-nvidia-driver.sh", {**GRID, "GRID_PLUGIN": ""}, stdin=GRID_URL))
    assert drv.called("apt-get", "install", "gcc", "make", "dkms", "linux-headers-5.15.0-91-generic")


def test_grid_driver_without_plugin_or_url_fails(drv: StubBin):
    result = failed(
        drv.run("11-nvidia-driver.sh", GRID, stdin="\n"),
        "11-nvidia-driver",
        "no way to install the GRID driver: Aliyun's Cloud Assistant plugin is missing; set gpu-k8s:gridDriverUrl",
    )
    assert not drv.calls("curl") and not installer_runs(drv)
    assert result.stdout == ""


def test_grid_bad_url_is_rejected_without_echo(drv: StubBin):
    result = failed(drv.run("11-nvidia-driver.sh", GRID, stdin="ftp://s3cr3t-host/x.run\n"), "11-nvidia-driver", "not shown")
    assert "s3cr3t" not in result.stderr + result.stdout


def test_cuda_toolkit_is_installed_from_nvidias_repo_once(drv: StubBin):
    env = {**TESLA, "INSTALL_CUDA_TOOLKIT": "true", "CUDA_TOOLKIT_VERSION": "12.2"}
    ok(drv.run("11-nvidia-driver.sh", env))
    assert any("cuda-keyring_1.1-1_all.deb" in arg and "ubuntu2204/x86_64" in arg for arg in drv.calls("curl")[1])
    assert drv.called("apt-get", "install", "cuda-toolkit-12-2")
    drv.clear()
    result = ok(drv.run("11-nvidia-driver.sh", env))
    assert not drv.calls("apt-get") and not drv.calls("curl")
    assert "cuda-toolkit-12-2 already installed, skipping" in result.stderr


def test_cuda_toolkit_not_requested(drv: StubBin):
    ok(drv.run("11-nvidia-driver.sh", {**TESLA, "CUDA_TOOLKIT_VERSION": "12.2"}))
    assert not drv.calls("apt-get")


def test_driver_waits_for_a_pending_reboot(drv: StubBin):
    write(drv.root / "run/gpu-k8s/reboot-pending", "")
    failed(drv.run("11-nvidia-driver.sh", TESLA), "11-nvidia-driver", "reboot")
    assert not drv.calls("curl")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"GPU_DRIVER": "auto"}, "tesla or grid"),
        ({"DRIVER_VERSION": "latest"}, "DRIVER_VERSION must look like"),
        ({"INSTALL_CUDA_TOOLKIT": "true", "CUDA_TOOLKIT_VERSION": "12"}, "CUDA_TOOLKIT_VERSION"),
    ],
)
def test_driver_rejects_bad_inputs(drv: StubBin, override: dict[str, str], message: str):
    failed(drv.run("11-nvidia-driver.sh", {**TESLA, **override}), "11-nvidia-driver", message)
    assert not drv.calls()


# ================================================================ 12-gpu-verify.sh

P4_CSV = "Tesla P4, 535.129.03, 7680 MiB"
A10_2Q_CSV = "NVIDIA A10-2Q, 470.161.03, 1889 MiB"


def h200_csv() -> str:
    """name, driver_version, memory.total of the real H200 capture (query-gpu.csv)."""
    header, row = (FIXTURES / "h200-driver-580" / "query-gpu.csv").read_text().splitlines()[:2]
    columns = dict(zip([c.strip() for c in header.split(",")], [c.strip() for c in row.split(",")], strict=True))
    return f"{columns['name']}, {columns['driver_version']}, {columns['memory.total [MiB]']}"


def smi_stub(sb: StubBin, csv: str, q_text: str = "", fail_first: int = 0) -> None:
    write(sb.state / "csv", csv + "\n")
    write(sb.state / "q", q_text)
    sb.add(
        "nvidia-smi",
        body=f"""
n=$(cat "$STUB_STATE/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$STUB_STATE/n"
if ((n < {fail_first})); then echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." >&2; exit 9; fi
case "$*" in
  *--query-gpu=name,driver_version,memory.total*) cat "$STUB_STATE/csv";;
  -q) cat "$STUB_STATE/q";;
esac
""",
    )


@pytest.mark.parametrize(
    ("csv", "name", "driver"),
    [
        (P4_CSV, "Tesla P4", "535.129.03"),
        (A10_2Q_CSV, "NVIDIA A10-2Q", "470.161.03"),
        (h200_csv(), "NVIDIA H200", "580.159.04"),
    ],
)
def test_gpu_verify_prints_exactly_the_csv_line(sb: StubBin, csv: str, name: str, driver: str):
    smi_stub(sb, csv, (FIXTURES / "h200-driver-580" / "nvidia-smi-q.txt").read_text())
    result = ok(sb.run("12-gpu-verify.sh", {**FAST, "EXPECTED_GPU_NAME": name, "DRIVER_VERSION": driver}))
    assert result.stdout == csv + "\n"
    assert "WARNING" not in result.stderr
    assert sb.called("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")


def test_gpu_verify_h200_line_matches_the_fixture():
    assert h200_csv() == "NVIDIA H200, 580.159.04, 143771 MiB"


def test_gpu_verify_warns_on_unexpected_gpu_and_driver(sb: StubBin):
    smi_stub(sb, P4_CSV)
    result = ok(sb.run("12-gpu-verify.sh", {**FAST, "EXPECTED_GPU_NAME": "Tesla T4", "DRIVER_VERSION": "550.127.05"}))
    assert result.stdout == P4_CSV + "\n"
    assert "reports GPU 'Tesla P4', expected 'Tesla T4'" in result.stderr
    assert "driver 535.129.03 is loaded, expected 550.127.05" in result.stderr


def test_gpu_verify_empty_expectations_do_not_warn(sb: StubBin):
    smi_stub(sb, A10_2Q_CSV)
    result = ok(sb.run("12-gpu-verify.sh", {**FAST, "EXPECTED_GPU_NAME": "", "DRIVER_VERSION": ""}))
    assert "WARNING" not in result.stderr


def test_gpu_verify_warns_when_the_vgpu_is_unlicensed(sb: StubBin):
    smi_stub(
        sb,
        A10_2Q_CSV,
        "vGPU Software Licensed Product\n"
        "    Product Name : NVIDIA RTX Virtual Workstation\n"
        "    License Status : Unlicensed (Restricted)\n",
    )
    result = ok(sb.run("12-gpu-verify.sh", {**FAST, "EXPECTED_GPU_NAME": "NVIDIA A10-2Q"}))
    assert "License Status: Unlicensed" in result.stderr
    assert result.stdout == A10_2Q_CSV + "\n"


def test_gpu_verify_licensed_vgpu_does_not_warn(sb: StubBin):
    smi_stub(sb, A10_2Q_CSV, "    License Status : Licensed (Expiry: 2026-12-1 0:0:0 GMT)\n")
    assert "WARNING" not in ok(sb.run("12-gpu-verify.sh", FAST)).stderr


def test_gpu_verify_retries_while_the_driver_settles(sb: StubBin):
    smi_stub(sb, P4_CSV, fail_first=2)
    result = ok(sb.run("12-gpu-verify.sh", FAST))
    assert result.stdout == P4_CSV + "\n"
    assert "not ready (try 1 of 6)" in result.stderr


def test_gpu_verify_fails_with_the_nvidia_smi_error_and_hint(sb: StubBin):
    smi_stub(sb, P4_CSV, fail_first=99)
    result = failed(
        sb.run("12-gpu-verify.sh", {**FAST, "VERIFY_TRIES": "3", "GPU_DRIVER": "tesla", "DRIVER_VERSION": "535.129.03"}),
        "12-gpu-verify",
        "couldn't communicate with the NVIDIA driver",
        "check 'dmesg | grep -i nvrm'",
        "Secure Boot ('mokutil --sb-state'), nouveau still bound",
        "that the driver branch (535.129.03) supports this GPU",
    )
    assert "GRID" not in result.stderr  # a compute node never needs GRID
    assert result.stdout == ""
    assert len([c for c in sb.calls("nvidia-smi") if "--format=csv,noheader" in c]) == 3


def test_gpu_verify_failure_on_a_vgpu_family_talks_about_grid(sb: StubBin):
    smi_stub(sb, P4_CSV, fail_first=99)
    failed(
        sb.run("12-gpu-verify.sh", {**FAST, "VERIFY_TRIES": "1", "GPU_DRIVER": "grid"}),
        "12-gpu-verify",
        "this vGPU family (ecs.vgn*/ecs.sgn*) needs the GRID driver",
    )


def test_gpu_verify_without_nvidia_smi_fails(sb: StubBin):
    failed(sb.run("12-gpu-verify.sh", FAST), "12-gpu-verify", "nvidia-smi not found")


# ================================================================ 20-container-runtime.sh

# `containerd config default` of containerd 1.7 (the parts the scripts touch).
CONTAINERD_DEFAULT = """disabled_plugins = []
version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.8"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          sandbox_mode = "podsandbox"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = ""
            SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
      [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
  [plugins."io.containerd.nri.v1.nri"]
    plugin_config_path = "/etc/nri/conf.d"
"""
# containerd.io (Docker's package) ships this: the CRI plugin is off.
CONTAINERD_IO_CONFIG = '#   Copyright 2018-2022 Docker Inc.\n\ndisabled_plugins = ["cri"]\n\n#root = "/var/lib/containerd"\n'
NVIDIA_CTK = r"""
cfg=""; for a in "$@"; do case "$a" in --config=*) cfg="${a#--config=}";; esac; done
if [[ "$1" == config ]]; then  # nvidia-ctk config --config-file F --set k=v ... --in-place
  shift; file=""; sets=()
  while (($#)); do case "$1" in --config-file) file="$2"; shift;; --set) sets+=("$2"); shift;; esac; shift; done
  touch "$file"
  for kv in "${sets[@]}"; do sed -i "/^#*${kv%%=*} =/d" "$file"; echo "${kv%%=*} = ${kv#*=}" >>"$file"; done
  exit 0
fi
case "$*" in
  --version)
    [[ -e "$STUB_STATE/pkg-nvidia-container-toolkit" ]] || exit 1
    v=$(cat "$STUB_STATE/pkg-nvidia-container-toolkit")
    echo "NVIDIA Container Toolkit CLI version ${v%-1}"; echo "commit: 4d8ff4a";;
  *--runtime=containerd*)
    if ! grep -q 'runtimes.nvidia]' "$cfg"; then cat >>"$cfg" <<'TOML'
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
            SystemdCgroup = false
TOML
    fi
    if [[ " $* " == *" --set-as-default "* && ! -e "$STUB_STATE/ctk-no-default" ]]; then
      sed -i 's/default_runtime_name = "runc"/default_runtime_name = "nvidia"/' "$cfg"
    fi;;
  *--runtime=docker*)
    mkdir -p "$(dirname "$cfg")"
    printf '{"runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}}\n' >"$cfg";;
esac
"""
# containerd: `config default` prints the fixture, `--config F config dump` prints F (the
# merged config of one file without imports; tests/scripts/test_runtime_real.py runs the real one).
CONTAINERD = r"""
case "$*" in
  "config default") cat "$STUB_STATE/containerd-default.toml";;
  "--config "*" config dump") cat "$2";;
  --version) echo "containerd containerd.io $(cat "$STUB_STATE/containerd-version" 2>/dev/null || echo 1.7.28) 05044ec";;
esac
"""
RUNTIME = {
    **FAST,
    "CONTAINER_TOOLKIT_VERSION": "1.17.8",
    "PACKAGE_MIRROR": "aliyun",
    "REGISTRY_MIRRORS": "",
    "INSTALL_DOCKER": "false",
}
ALIYUN_TOOLKIT_LINE = (
    "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
    "https://mirrors.aliyun.com/libnvidia-container/stable/deb/amd64 /\n"
)
PINNED = [
    "nvidia-container-toolkit=1.17.8-1",
    "nvidia-container-toolkit-base=1.17.8-1",
    "libnvidia-container-tools=1.17.8-1",
    "libnvidia-container1=1.17.8-1",
]


@pytest.fixture
def rt(sb: StubBin) -> StubBin:
    write(sb.state / "containerd-default.toml", CONTAINERD_DEFAULT)
    sb.add("containerd", body=CONTAINERD)
    defer(sb, "containerd", "containerd")  # not installed yet
    sb.add("apt-get", body=APT_GET).add("curl", body=CURL).add("gpg", body=GPG)
    sb.add("nvidia-ctk", body=NVIDIA_CTK).add("systemctl")
    write(sb.root / "etc/os-release", 'VERSION_ID="22.04"\nVERSION_CODENAME=jammy\n')
    (sb.root / "etc/apt/sources.list.d").mkdir(parents=True)
    return sb


def containerd_config(sb: StubBin) -> str:
    return (sb.root / "etc/containerd/config.toml").read_text()


def test_runtime_installs_containerd_and_makes_nvidia_the_default(rt: StubBin):
    result = ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert rt.called("apt-get", "install", "containerd")
    assert rt.called("containerd", "config", "default")
    config = containerd_config(rt)
    assert 'default_runtime_name = "nvidia"' in config
    assert "SystemdCgroup = true" in config and "SystemdCgroup = false" not in config
    assert 'config_path = "/etc/containerd/certs.d"' in config
    assert 'plugin_config_path = "/etc/nri/conf.d"' in config  # untouched
    cfg_path = str(rt.root / "etc/containerd/config.toml")
    assert rt.calls("nvidia-ctk")[-1] == [
        "nvidia-ctk",
        "runtime",
        "configure",
        "--runtime=containerd",
        "--set-as-default",
        f"--config={cfg_path}",
    ]
    assert rt.called("systemctl", "restart", "containerd")
    assert result.stdout == ""


def test_runtime_uses_the_aliyun_toolkit_mirror_and_pins_versions(rt: StubBin):
    ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert rt.called("curl", "https://mirrors.aliyun.com/libnvidia-container/gpgkey")
    assert (rt.root / "etc/apt/sources.list.d/nvidia-container-toolkit.list").read_text() == ALIYUN_TOOLKIT_LINE
    assert (rt.root / "usr/share/keyrings/nvidia-container-toolkit-keyring.gpg").exists()
    assert rt.called("apt-get", "install", *PINNED)
    install = next(c for c in rt.calls("apt-get") if "nvidia-container-toolkit=1.17.8-1" in c)
    assert "DPkg::Lock::Timeout=600" in install


def test_runtime_upstream_mirror(rt: StubBin):
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "PACKAGE_MIRROR": "upstream"}))
    assert rt.called("curl", "https://nvidia.github.io/libnvidia-container/gpgkey")
    line = (rt.root / "etc/apt/sources.list.d/nvidia-container-toolkit.list").read_text()
    assert "https://nvidia.github.io/libnvidia-container/stable/deb/amd64 /" in line


def test_runtime_is_idempotent(rt: StubBin):
    env = {**RUNTIME, "REGISTRY_MIRRORS": "docker.io=https://abc.mirror.aliyuncs.com"}
    ok(rt.run("20-container-runtime.sh", env))
    before = containerd_config(rt)
    rt.clear()
    result = ok(rt.run("20-container-runtime.sh", env))
    assert not rt.calls("apt-get") and not rt.calls("curl")
    assert not rt.called("nvidia-ctk", "runtime")
    assert not rt.called("systemctl", "restart", "containerd")
    assert containerd_config(rt) == before
    assert "unchanged, not restarting containerd" in result.stderr


def test_runtime_upgrades_a_different_toolkit_version(rt: StubBin):
    write(rt.state / "pkg-nvidia-container-toolkit", "1.16.2-1")
    ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert rt.called("apt-get", "install", *PINNED)


def test_runtime_fails_when_nvidia_is_not_the_default_after_nvidia_ctk(rt: StubBin):
    (rt.state / "ctk-no-default").touch()
    failed(rt.run("20-container-runtime.sh", RUNTIME), "20-container-runtime", 'lacks: default_runtime_name = "nvidia"')
    assert not rt.called("systemctl", "restart", "containerd")


def test_runtime_nvidia_ctk_failure_names_the_step(rt: StubBin):
    rt.add("nvidia-ctk", body='[[ "$1" == runtime ]] && exit 1\n' + NVIDIA_CTK)
    failed(
        rt.run("20-container-runtime.sh", RUNTIME),
        "20-container-runtime",
        "nvidia-ctk runtime configure --runtime=containerd failed",
    )


def test_runtime_sets_gpu_isolation_in_the_toolkit_config(rt: StubBin):
    """The toolkit ignores NVIDIA_VISIBLE_DEVICES from unprivileged containers and reads the plugin's
    volume mounts; a second run changes nothing; isolation off writes NVIDIA's defaults back."""
    toolkit = rt.root / "etc/nvidia-container-runtime/config.toml"
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "GPU_ISOLATION": "true"}))
    text = toolkit.read_text()
    assert "accept-nvidia-visible-devices-envvar-when-unprivileged = false" in text
    assert "accept-nvidia-visible-devices-as-volume-mounts = true" in text
    calls = len(rt.calls("nvidia-ctk"))
    result = ok(rt.run("20-container-runtime.sh", {**RUNTIME, "GPU_ISOLATION": "true"}))
    assert "already, skipping" in result.stderr
    assert not [c for c in rt.calls("nvidia-ctk")[calls:] if c[1] == "config"]
    ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert "accept-nvidia-visible-devices-envvar-when-unprivileged = true" in toolkit.read_text()


def test_runtime_writes_hosts_toml_per_mirror(rt: StubBin):
    mirrors = "docker.io=https://abc.mirror.aliyuncs.com;registry.k8s.io=https://k8s.m.daocloud.io;_default=https://p.example.com"
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "REGISTRY_MIRRORS": mirrors}))
    # containerd's _default namespace: no server line, so a pull falls back to the image's own registry.
    fallback = tomllib.loads((rt.root / "etc/containerd/certs.d/_default/hosts.toml").read_text())
    assert fallback == {"host": {"https://p.example.com": {"capabilities": ["pull", "resolve"]}}}
    docker = (rt.root / "etc/containerd/certs.d/docker.io/hosts.toml").read_text()
    assert 'server = "https://registry-1.docker.io"' in docker
    assert '[host."https://abc.mirror.aliyuncs.com"]\n  capabilities = ["pull", "resolve"]' in docker
    k8s = (rt.root / "etc/containerd/certs.d/registry.k8s.io/hosts.toml").read_text()
    assert 'server = "https://registry.k8s.io"' in k8s and '[host."https://k8s.m.daocloud.io"]' in k8s


def test_runtime_removes_mirrors_it_no_longer_manages(rt: StubBin):
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "REGISTRY_MIRRORS": "docker.io=https://abc.mirror.aliyuncs.com"}))
    mine = rt.root / "etc/containerd/certs.d/docker.io/hosts.toml"
    theirs = write(rt.root / "etc/containerd/certs.d/nvcr.io/hosts.toml", 'server = "https://nvcr.io"\n')
    ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert not mine.exists()
    assert theirs.exists()


def test_runtime_rejects_a_bad_mirror_entry(rt: StubBin):
    failed(
        rt.run("20-container-runtime.sh", {**RUNTIME, "REGISTRY_MIRRORS": "docker.io"}),
        "20-container-runtime",
        "REGISTRY_MIRRORS",
    )


def test_runtime_keeps_an_existing_config(rt: StubBin):
    (rt.state / "pending/containerd/containerd").rename(rt.dir / "containerd")  # already installed
    write(rt.root / "etc/containerd/config.toml", CONTAINERD_DEFAULT.replace("pause:3.8", "pause:3.9"))
    ok(rt.run("20-container-runtime.sh", RUNTIME))
    assert not rt.called("apt-get", "install", "containerd")
    assert not rt.called("containerd", "config", "default")
    assert "pause:3.9" in containerd_config(rt)


def with_docker(rt: StubBin, containerd_io: str = "2.1.5") -> StubBin:
    """docker-ce and containerd.io (which brings containerd) not installed yet."""
    rt.add("docker")
    defer(rt, "docker", "docker-ce")
    (rt.state / "pending/containerd/containerd").rename(rt.state / "containerd-bin")
    defer_dir = rt.state / "pending/containerd.io"
    defer_dir.mkdir(parents=True)
    (rt.state / "containerd-bin").rename(defer_dir / "containerd")
    write(rt.state / "containerd-version", containerd_io)
    return rt


CONTAINERD_IO_PIN = (
    "Explanation: # managed by gpu-k8s (20-container-runtime)\nPackage: containerd.io\nPin: version 2.1.5-*\nPin-Priority: 1001\n"
)


def test_runtime_with_docker_replaces_containerd_ios_stub_config(rt: StubBin):
    with_docker(rt)
    write(rt.root / "etc/containerd/config.toml", CONTAINERD_IO_CONFIG)
    result = ok(rt.run("20-container-runtime.sh", {**RUNTIME, "INSTALL_DOCKER": "true"}))
    assert (rt.root / "etc/apt/preferences.d/gpu-k8s-containerd-io").read_text() == CONTAINERD_IO_PIN
    backups = list((rt.root / "etc/containerd").glob("config.toml.gpu-k8s-*.bak"))
    assert [b.read_text() for b in backups] == [CONTAINERD_IO_CONFIG]
    assert rt.called("curl", "https://mirrors.aliyun.com/docker-ce/linux/ubuntu/gpg")
    docker_list = (rt.root / "etc/apt/sources.list.d/docker.list").read_text()
    assert (
        docker_list == "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] "
        "https://mirrors.aliyun.com/docker-ce/linux/ubuntu jammy stable\n"
    )
    assert rt.called("apt-get", "install", "docker-ce", "docker-ce-cli", "containerd.io")
    assert not rt.called("apt-get", "install", "containerd")
    assert 'default_runtime_name = "nvidia"' in containerd_config(rt)
    assert 'disabled_plugins = ["cri"]' not in containerd_config(rt)
    assert rt.called("nvidia-ctk", "runtime", "configure", "--runtime=docker", f"--config={rt.root}/etc/docker/daemon.json")
    assert rt.called("systemctl", "restart", "docker")
    assert result.stdout == ""
    rt.clear()
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "INSTALL_DOCKER": "true"}))
    assert not rt.calls("apt-get") and not rt.called("nvidia-ctk", "runtime")
    assert not rt.called("systemctl", "restart", "docker")


def test_runtime_docker_fails_when_the_pinned_containerd_io_is_not_what_got_installed(rt: StubBin):
    with_docker(rt, containerd_io="2.2.0")
    failed(
        rt.run("20-container-runtime.sh", {**RUNTIME, "INSTALL_DOCKER": "true"}),
        "20-container-runtime",
        "containerd.io 2.1.5 was pinned but containerd reports",
        "apt-cache policy containerd.io",
    )


def test_runtime_upstream_docker_repo(rt: StubBin):
    with_docker(rt)
    ok(rt.run("20-container-runtime.sh", {**RUNTIME, "PACKAGE_MIRROR": "upstream", "INSTALL_DOCKER": "true"}))
    assert rt.called("curl", "https://download.docker.com/linux/ubuntu/gpg")


def test_runtime_apt_update_failure_names_the_step(rt: StubBin):
    (rt.state / "apt-fail-update").touch()
    failed(rt.run("20-container-runtime.sh", RUNTIME), "20-container-runtime", "apt-get update failed 5 times")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"CONTAINER_TOOLKIT_VERSION": "latest"}, "CONTAINER_TOOLKIT_VERSION"),
        ({"PACKAGE_MIRROR": "tuna"}, "PACKAGE_MIRROR"),
        ({"INSTALL_DOCKER": "yes"}, "INSTALL_DOCKER"),
    ],
)
def test_runtime_rejects_bad_inputs(rt: StubBin, override: dict[str, str], message: str):
    failed(rt.run("20-container-runtime.sh", {**RUNTIME, **override}), "20-container-runtime", message)
    assert not rt.calls()


# ================================================================ 21-docker-gpu-check.sh

DOCKER = r"""
case "$1" in
  image) [[ -e "$STUB_STATE/image-present" ]] || exit 1;;
  pull) if [[ -e "$STUB_STATE/pull-fails" ]]; then
          echo "Error response from daemon: Get \"https://registry-1.docker.io/v2/\": net/http: request canceled" >&2; exit 1
        fi
        touch "$STUB_STATE/image-present";;
  run) if [[ -e "$STUB_STATE/no-runtime" ]]; then
         echo 'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].' >&2; exit 125
       fi
       cat "$STUB_STATE/smi-L";;
esac
"""


@pytest.fixture
def dock(sb: StubBin) -> StubBin:
    sb.add("docker", body=DOCKER)
    shutil.copy(FIXTURES / "h200-driver-580" / "nvidia-smi-L.txt", sb.state / "smi-L")
    return sb


def test_docker_check_prints_the_gpu_list(dock: StubBin):
    result = ok(dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04"}))
    assert result.stdout == (FIXTURES / "h200-driver-580" / "nvidia-smi-L.txt").read_text()
    assert dock.called("docker", "pull", "ubuntu:22.04")
    assert dock.calls("docker")[-1] == ["docker", "run", "--rm", "--gpus", "all", "ubuntu:22.04", "nvidia-smi", "-L"]
    # With GPU isolation the toolkit honours --gpus' NVIDIA_VISIBLE_DEVICES only with CAP_SYS_ADMIN.
    ok(dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04", "GPU_ISOLATION": "true"}))
    assert dock.calls("docker")[-1][3:7] == ["--gpus", "all", "--cap-add", "SYS_ADMIN"]


def test_docker_check_pulls_only_once(dock: StubBin):
    ok(dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04"}))
    dock.clear()
    ok(dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04"}))
    assert not dock.called("docker", "pull", "ubuntu:22.04")


def test_docker_check_explains_could_not_select_device_driver(dock: StubBin):
    (dock.state / "no-runtime").touch()
    result = failed(
        dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04"}),
        "21-docker-gpu-check",
        "could not select device driver",
        "nvidia-ctk runtime configure --runtime=docker",
    )
    assert result.stdout == ""


def test_docker_check_pull_failure_is_not_blamed_on_the_gpu(dock: StubBin):
    (dock.state / "pull-fails").touch()
    failed(
        dock.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04", "PULL_TRIES": "2"}),
        "21-docker-gpu-check",
        "cannot pull ubuntu:22.04",
    )
    assert len(dock.calls("docker")) == 3  # inspect + 2 pulls, never run


def test_docker_check_needs_docker(sb: StubBin):
    failed(
        sb.run("21-docker-gpu-check.sh", {**FAST, "DOCKER_TEST_IMAGE": "ubuntu:22.04"}), "21-docker-gpu-check", "docker not found"
    )


# ================================================================ 30-kube-packages.sh

KUBEADM_VERSION = r"""
if [[ "$*" == "version -o short" ]]; then
  [[ -e "$STUB_STATE/pkg-kubeadm" ]] || exit 127
  v=$(cat "$STUB_STATE/pkg-kubeadm"); echo "v${v%-1.1}"
fi
"""
KUBE = {**FAST, "KUBERNETES_VERSION": "1.34.2", "PACKAGE_MIRROR": "aliyun"}


@pytest.fixture
def kube(sb: StubBin) -> StubBin:
    sb.add("modprobe", body='mkdir -p "$GPU_K8S_ROOT/sys/module/$1"')
    sb.add(
        "sysctl",
        body='mkdir -p "$GPU_K8S_ROOT/proc/sys/net/ipv4" "$GPU_K8S_ROOT/proc/sys/net/bridge"\n'
        'echo 1 >"$GPU_K8S_ROOT/proc/sys/net/ipv4/ip_forward"\n'
        'echo 1 >"$GPU_K8S_ROOT/proc/sys/net/bridge/bridge-nf-call-iptables"',
    )
    sb.add("swapon", body='[[ -e "$STUB_STATE/swap-off" ]] || echo "/swapfile file 2G 0B -2"')
    sb.add("swapoff", body='touch "$STUB_STATE/swap-off"')
    sb.add("kubeadm", body=KUBEADM_VERSION)
    sb.add("apt-get", body=APT_GET).add("apt-mark").add("curl", body=CURL).add("gpg", body=GPG)
    write(sb.root / "etc/fstab", "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    (sb.root / "etc/apt/sources.list.d").mkdir(parents=True)
    return sb


def test_kube_packages_from_the_aliyun_mirror(kube: StubBin):
    result = ok(kube.run("30-kube-packages.sh", KUBE))
    base = "https://mirrors.aliyun.com/kubernetes-new/core/stable/v1.34/deb/"
    assert kube.called("curl", base + "Release.key")
    assert (kube.root / "etc/apt/keyrings/kubernetes-apt-keyring.gpg").exists()
    assert (kube.root / "etc/apt/sources.list.d/kubernetes.list").read_text() == (
        f"deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] {base} /\n"
    )
    assert kube.called("apt-get", "install", "kubelet=1.34.2-1.1", "kubeadm=1.34.2-1.1", "kubectl=1.34.2-1.1")
    assert kube.called("apt-mark", "hold", "kubelet", "kubeadm", "kubectl")
    assert result.stdout == ""


def test_kube_packages_kernel_settings_and_swap(kube: StubBin):
    ok(kube.run("30-kube-packages.sh", KUBE))
    assert (kube.root / "etc/modules-load.d/k8s.conf").read_text() == "overlay\nbr_netfilter\n"
    assert kube.called("modprobe", "overlay") and kube.called("modprobe", "br_netfilter")
    sysctl = (kube.root / "etc/sysctl.d/k8s.conf").read_text()
    assert "net.bridge.bridge-nf-call-iptables = 1" in sysctl and "net.ipv4.ip_forward = 1" in sysctl
    assert kube.called("sysctl", "-p", f"{kube.root}/etc/sysctl.d/k8s.conf")
    assert kube.called("swapoff", "-a")
    assert "# /swapfile none swap sw 0 0" in (kube.root / "etc/fstab").read_text()
    assert "LABEL=cloudimg-rootfs / ext4 defaults 0 1\n" in (kube.root / "etc/fstab").read_text()


def test_kube_packages_is_idempotent(kube: StubBin):
    ok(kube.run("30-kube-packages.sh", KUBE))
    kube.clear()
    result = ok(kube.run("30-kube-packages.sh", KUBE))
    assert not kube.calls("apt-get") and not kube.calls("curl") and not kube.calls("apt-mark")
    assert not kube.calls("modprobe") and not kube.calls("sysctl") and not kube.calls("swapoff")
    assert "kubeadm v1.34.2 already installed, skipping" in result.stderr


def test_kube_packages_refuse_a_new_version_under_a_running_node(kube: StubBin):
    ok(kube.run("30-kube-packages.sh", KUBE))
    write(kube.root / "etc/kubernetes/kubelet.conf", "apiVersion: v1\nkind: Config\n")  # joined / initialised
    kube.clear()
    result = failed(
        kube.run("30-kube-packages.sh", {**KUBE, "KUBERNETES_VERSION": "1.35.0"}), "30-kube-packages", "kubeadm upgrade"
    )
    assert "runs Kubernetes v1.34.2" in result.stderr and "gpu-k8s:kubernetesVersion back to 1.34.2" in result.stderr
    assert not kube.calls("apt-get")


def test_kube_packages_install_on_a_node_not_yet_in_a_cluster(kube: StubBin):
    ok(kube.run("30-kube-packages.sh", KUBE))  # e.g. the first run failed before kubeadm init
    kube.clear()
    ok(kube.run("30-kube-packages.sh", {**KUBE, "KUBERNETES_VERSION": "1.34.3"}))
    assert kube.called("apt-get", "install", "kubelet=1.34.3-1.1", "kubeadm=1.34.3-1.1", "kubectl=1.34.3-1.1")


def test_kube_packages_upstream_repo_per_minor(kube: StubBin):
    ok(kube.run("30-kube-packages.sh", {**KUBE, "KUBERNETES_VERSION": "1.30.14", "PACKAGE_MIRROR": "upstream"}))
    assert kube.called("curl", "https://pkgs.k8s.io/core:/stable:/v1.30/deb/Release.key")
    assert "https://pkgs.k8s.io/core:/stable:/v1.30/deb/ /" in (kube.root / "etc/apt/sources.list.d/kubernetes.list").read_text()
    assert kube.called("apt-get", "install", "kubelet=1.30.14-1.1", "kubeadm=1.30.14-1.1", "kubectl=1.30.14-1.1")


def test_kube_packages_install_failure_names_the_step(kube: StubBin):
    (kube.state / "apt-fail-install").touch()
    failed(kube.run("30-kube-packages.sh", KUBE), "30-kube-packages", "kubelet/kubeadm/kubectl 1.34.2-1.1")
    assert not kube.calls("apt-mark")


def test_kube_packages_rejects_a_bad_version(kube: StubBin):
    failed(kube.run("30-kube-packages.sh", {**KUBE, "KUBERNETES_VERSION": "v1.34"}), "30-kube-packages", "KUBERNETES_VERSION")


# ================================================================ 40-kubeadm-init.sh

TOKEN = "abcdef.0123456789abcdef"
CA_HASH = "sha256:" + "ab" * 32
ADMIN_CONF = """apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTg==
    server: https://172.16.0.10:6443
  name: kubernetes
kind: Config
"""
KUBEADM_INIT = r"""
repo="registry.k8s.io"; prev=""; for a in "$@"; do [[ "$prev" == --image-repository ]] && repo="$a"; prev="$a"; done
case "$*" in
  "config images list"*)
    printf '%s\n' "$repo/kube-apiserver:v1.34.2" "$repo/coredns:v1.12.1" "$repo/pause:3.10.1" "$repo/etcd:3.6.4-0";;
  "config images pull"*) echo "[config/images] Pulled $repo/pause:3.10.1";;
  init*)
    [[ -e "$STUB_STATE/init-fails" ]] && { echo "[ERROR Port-6443]: Port 6443 is in use" >&2; exit 1; }
    cp "$3" "$STUB_STATE/kubeadm.yaml"
    mkdir -p "$GPU_K8S_ROOT/etc/kubernetes"; cp "$STUB_STATE/admin.conf" "$GPU_K8S_ROOT/etc/kubernetes/admin.conf"
    echo "[bootstrap-token] Using token: abcdef.0123456789abcdef"
    echo "kubeadm join 172.16.0.10:6443 --token abcdef.0123456789abcdef \\"
    echo "	--discovery-token-ca-cert-hash sha256:abababababababababababababababababababababababababababababababab";;
esac
"""
INIT = {
    **FAST,
    "KUBERNETES_VERSION": "1.34.2",
    "IMAGE_REPOSITORY": "registry.aliyuncs.com/google_containers",
    "API_SERVER_IP": "203.0.113.20",
    "ADVERTISE_ADDRESS": "172.16.0.10",
    "POD_CIDR": "10.244.0.0/16",
    "NODE_NAME": "gpu-0",
    "CONTROL_PLANE_TAINT": "false",
}


@pytest.fixture
def init(sb: StubBin) -> StubBin:
    sb.add("kubeadm", body=KUBEADM_INIT).add("systemctl")
    sb.add("kubectl", body='[[ -e "$STUB_STATE/not-ready" ]] && { echo "connection refused" >&2; exit 1; }; echo -n ok')
    write(sb.state / "admin.conf", ADMIN_CONF)
    write(sb.root / "etc/containerd/config.toml", CONTAINERD_DEFAULT)
    return sb


def kubeadm_docs(sb: StubBin) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((sb.state / "kubeadm.yaml").read_text())}


def test_kubeadm_init_writes_the_config_and_inits(init: StubBin):
    result = ok(init.run("40-kubeadm-init.sh", INIT))
    cfg = f"{init.root}/etc/kubernetes/gpu-k8s-kubeadm.yaml"
    assert init.called("kubeadm", "init", "--config", cfg)
    docs = kubeadm_docs(init)
    assert docs["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert docs["InitConfiguration"]["localAPIEndpoint"]["advertiseAddress"] == "172.16.0.10"
    node = docs["InitConfiguration"]["nodeRegistration"]
    assert node == {"name": "gpu-0", "criSocket": "unix:///run/containerd/containerd.sock", "taints": []}
    cluster = docs["ClusterConfiguration"]
    assert cluster["kubernetesVersion"] == "v1.34.2"
    assert cluster["imageRepository"] == "registry.aliyuncs.com/google_containers"
    assert cluster["controlPlaneEndpoint"] == "172.16.0.10:6443"
    assert cluster["networking"]["podSubnet"] == "10.244.0.0/16"
    assert cluster["apiServer"]["certSANs"] == ["203.0.113.20", "172.16.0.10"]
    assert docs["KubeletConfiguration"]["cgroupDriver"] == "systemd"
    assert init.called("kubectl", "--kubeconfig", f"{init.root}/etc/kubernetes/admin.conf", "get", "--raw=/readyz")
    assert result.stdout == ""


def test_kubeadm_init_never_logs_the_token(init: StubBin):
    result = ok(init.run("40-kubeadm-init.sh", INIT))
    assert TOKEN not in result.stdout + result.stderr
    assert "0123456789abcdef" not in result.stderr
    assert "abababababababab" not in result.stderr
    assert "--token <redacted>" in result.stderr


def test_kubeadm_init_aligns_the_sandbox_image(init: StubBin):
    ok(init.run("40-kubeadm-init.sh", INIT))
    assert init.called("kubeadm", "config", "images", "list", "--image-repository", "registry.aliyuncs.com/google_containers")
    config = (init.root / "etc/containerd/config.toml").read_text()
    assert 'sandbox_image = "registry.aliyuncs.com/google_containers/pause:3.10.1"' in config
    assert 'sandbox_mode = "podsandbox"' in config
    assert init.calls("systemctl") == [["systemctl", "restart", "containerd"]]
    assert init.called("kubeadm", "config", "images", "pull", "--image-repository", "registry.aliyuncs.com/google_containers")


def test_kubeadm_init_keeps_the_control_plane_taint(init: StubBin):
    ok(init.run("40-kubeadm-init.sh", {**INIT, "CONTROL_PLANE_TAINT": "true", "KUBERNETES_VERSION": "1.30.14"}))
    docs = kubeadm_docs(init)
    assert "taints" not in docs["InitConfiguration"]["nodeRegistration"]
    assert docs["ClusterConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"


def test_kubeadm_init_is_idempotent(init: StubBin):
    ok(init.run("40-kubeadm-init.sh", INIT))
    init.clear()
    result = ok(init.run("40-kubeadm-init.sh", INIT))
    assert not init.called("kubeadm", "init", "--config", f"{init.root}/etc/kubernetes/gpu-k8s-kubeadm.yaml")
    assert not any(c[1:4] == ["config", "images", "pull"] for c in init.calls("kubeadm"))
    assert not init.calls("systemctl")
    assert "skipping kubeadm init" in result.stderr


def test_kubeadm_init_failure_names_the_step(init: StubBin):
    (init.state / "init-fails").touch()
    failed(init.run("40-kubeadm-init.sh", INIT), "40-kubeadm-init", "kubeadm init failed", "the node was reset")
    # A half-done init is undone, so the next `pulumi up` can simply run kubeadm init again.
    assert init.called("kubeadm", "reset", "-f")


def test_kubeadm_init_ready_wait_is_bounded(init: StubBin):
    (init.state / "not-ready").touch()
    failed(
        init.run("40-kubeadm-init.sh", {**INIT, "READY_TIMEOUT": "0"}),
        "40-kubeadm-init",
        "not ready after 0s",
        "connection refused",
    )


@pytest.mark.parametrize("key", ["API_SERVER_IP", "ADVERTISE_ADDRESS", "NODE_NAME", "POD_CIDR", "CONTROL_PLANE_TAINT"])
def test_kubeadm_init_rejects_bad_inputs(init: StubBin, key: str):
    failed(init.run("40-kubeadm-init.sh", {**INIT, key: "bad value"}), "40-kubeadm-init", key)
    assert not init.calls()


# ================================================================ 41-kubeconfig.sh


def test_kubeconfig_points_at_the_public_ip(sb: StubBin):
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    result = ok(sb.run("41-kubeconfig.sh", {"API_SERVER_IP": "203.0.113.20"}))
    assert result.stdout == ADMIN_CONF.replace("https://172.16.0.10:6443", "https://203.0.113.20:6443")
    assert result.stderr == ""
    assert yaml.safe_load(result.stdout)["clusters"][0]["cluster"]["server"] == "https://203.0.113.20:6443"


def test_kubeconfig_without_cluster_fails(sb: StubBin):
    result = failed(sb.run("41-kubeconfig.sh", {"API_SERVER_IP": "203.0.113.20"}), "41-kubeconfig", "admin.conf not found")
    assert result.stdout == ""


def test_kubeconfig_rejects_a_bad_ip(sb: StubBin):
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    failed(sb.run("41-kubeconfig.sh", {"API_SERVER_IP": "203.0.113.20#"}), "41-kubeconfig", "API_SERVER_IP")


# ================================================================ 42-ca-cert-hash.sh


def make_ca(sb: StubBin, key_args: list[str]) -> str:
    """A self-signed CA at $ROOT/etc/kubernetes/pki/ca.crt; returns the expected hash."""
    pki = sb.root / "etc/kubernetes/pki"
    pki.mkdir(parents=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", *key_args, "-nodes", "-keyout", str(pki / "ca.key"),
         "-out", str(pki / "ca.crt"), "-days", "1", "-subj", "/CN=kubernetes"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem = subprocess.run(
        ["openssl", "x509", "-in", str(pki / "ca.crt"), "-noout", "-pubkey"], check=True, capture_output=True, text=True
    ).stdout
    der = base64.b64decode("".join(line for line in pem.splitlines() if "-----" not in line))  # SubjectPublicKeyInfo
    return "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture
def pki(sb: StubBin) -> StubBin:
    real = shutil.which("openssl")
    if real is None:
        pytest.skip("openssl not installed")
    (sb.dir / "openssl").symlink_to(real)
    return sb


@pytest.mark.parametrize("key_args", [["rsa:2048"], ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]], ids=["rsa", "ecdsa"])
def test_ca_cert_hash_matches_the_public_key(pki: StubBin, key_args: list[str]):
    expected = make_ca(pki, key_args)
    result = ok(pki.run("42-ca-cert-hash.sh"))
    assert result.stdout == expected + "\n"


def test_ca_cert_hash_without_ca_fails(pki: StubBin):
    result = failed(pki.run("42-ca-cert-hash.sh"), "42-ca-cert-hash", "ca.crt not found")
    assert result.stdout == ""


# ================================================================ 43-join-token.sh

TOKEN_LIST = r"""
if [[ "$1 $2" == "token list" ]]; then
  echo "TOKEN                     TTL         EXPIRES                USAGES                   DESCRIPTION"
  for t in "$STUB_STATE"/token-*; do
    [[ -e "$t" ]] && echo "$(cat "$t")   1h   2026-11-28T23:00:00Z   authentication,signing   gpu-k8s worker join"
  done
elif [[ "$1 $2" == "token create" ]]; then
  [[ -e "$STUB_STATE/create-fails" ]] && { echo "failed to create token $3: etcdserver: request timed out" >&2; exit 1; }
  echo "${3%%.*}.****************" >"$STUB_STATE/token-${3%%.*}"; echo "$3"
fi
"""


@pytest.fixture
def tok(sb: StubBin) -> StubBin:
    sb.add("kubeadm", body=TOKEN_LIST)
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    return sb


def test_join_token_is_created_and_never_printed(tok: StubBin):
    result = ok(tok.run("43-join-token.sh", stdin=TOKEN + "\n"))
    admin = f"{tok.root}/etc/kubernetes/admin.conf"
    assert tok.calls("kubeadm")[-1] == [
        "kubeadm", "token", "create", TOKEN, "--ttl", "2h", "--description", "gpu-k8s worker join", "--kubeconfig", admin,
    ]  # fmt: skip
    assert result.stdout == ""
    assert TOKEN not in result.stderr and "0123456789abcdef" not in result.stderr
    assert "created bootstrap token abcdef" in result.stderr


def test_join_token_is_idempotent(tok: StubBin):
    ok(tok.run("43-join-token.sh", stdin=TOKEN))
    tok.clear()
    result = ok(tok.run("43-join-token.sh", stdin=TOKEN))
    assert not tok.called("kubeadm", "create")
    assert not any(c[1:3] == ["token", "create"] for c in tok.calls("kubeadm"))
    assert "already exists, skipping" in result.stderr


@pytest.mark.parametrize(
    "bad", ["ABCDEF.0123456789abcdef", "abcdef.0123456789", "abcdef0123456789abcdef", "", "abcdef.0123456789abcdef x"]
)
def test_join_token_rejects_malformed_tokens_without_echo(tok: StubBin, bad: str):
    result = failed(tok.run("43-join-token.sh", stdin=bad + "\n"), "43-join-token", "malformed")
    assert not tok.calls()
    if bad:
        assert bad not in result.stdout + result.stderr


def test_join_token_failure_is_redacted(tok: StubBin):
    (tok.state / "create-fails").touch()
    result = failed(tok.run("43-join-token.sh", stdin=TOKEN), "43-join-token", "kubeadm token create failed", "request timed out")
    assert TOKEN not in result.stderr and "0123456789abcdef" not in result.stderr


# ================================================================ 50-kubeadm-join.sh

KUBEADM_JOIN = r"""
repo="registry.k8s.io"; prev=""; for a in "$@"; do [[ "$prev" == --image-repository ]] && repo="$a"; prev="$a"; done
case "$*" in
  "config images list"*) printf '%s\n' "$repo/kube-proxy:v1.34.2" "$repo/pause:3.10.1";;
  "join --config "*)
    cp "$3" "$STUB_STATE/join.yaml"; stat -c %a "$3" >"$STUB_STATE/join.mode"
    if [[ -e "$STUB_STATE/join-fails" ]]; then
      echo "error execution phase preflight: couldn't validate the identity of the API Server:" >&2
      echo "token abcdef.0123456789abcdef rejected" >&2; exit 1
    fi
    mkdir -p "$GPU_K8S_ROOT/etc/kubernetes/pki"; echo kubelet >"$GPU_K8S_ROOT/etc/kubernetes/kubelet.conf"
    cp "$STUB_STATE/ca.crt" "$GPU_K8S_ROOT/etc/kubernetes/pki/ca.crt"  # the cluster's CA, as kubeadm join writes it
    echo "This node has joined the cluster";;
  "reset -f --cri-socket "*) rm -rf "$GPU_K8S_ROOT/etc/kubernetes/kubelet.conf" "$GPU_K8S_ROOT/etc/kubernetes/pki";;
esac
"""
JOIN = {
    **FAST,
    "CONTROL_PLANE_ENDPOINT": "172.16.0.10:6443",
    "NODE_NAME": "gpu-1",
    "KUBERNETES_VERSION": "1.34.2",
    "IMAGE_REPOSITORY": "registry.aliyuncs.com/google_containers",
}


def make_cluster_ca(directory: Path) -> tuple[Path, str]:
    """A self-signed cluster CA (ECDSA: quick to make) and its kubeadm public-key hash."""
    directory.mkdir(parents=True)
    crt = directory / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(directory / "ca.key"), "-out", str(crt), "-days", "1", "-subj", "/CN=kubernetes"],
        check=True, capture_output=True,
    )  # fmt: skip
    pem = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-pubkey"], check=True, capture_output=True, text=True)
    der = base64.b64decode("".join(line for line in pem.stdout.splitlines() if "-----" not in line))
    return crt, "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module")
def cluster_cas(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Two clusters' CAs: the one a worker joined first, and the one of a rebuilt control plane."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    base = tmp_path_factory.mktemp("cluster-cas")
    return {name: make_cluster_ca(base / name) for name in ("first", "rebuilt")}


@pytest.fixture
def join(sb: StubBin, cluster_cas) -> StubBin:
    sb.add("kubeadm", body=KUBEADM_JOIN).add("systemctl").add("ip")
    (sb.dir / "openssl").symlink_to(shutil.which("openssl"))
    write(sb.root / "etc/containerd/config.toml", CONTAINERD_DEFAULT)
    shutil.copy(cluster_cas["first"][0], sb.state / "ca.crt")  # the cluster the join reaches
    return sb


def join_stdin(cluster_cas, which: str = "first") -> str:
    return f"{TOKEN}\n{cluster_cas[which][1]}\n"


def test_kubeadm_join_pins_the_ca_and_removes_the_secret_file(join: StubBin, cluster_cas):
    ca_hash = cluster_cas["first"][1]
    result = ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)))
    [call] = [c for c in join.calls("kubeadm") if c[1] == "join"]
    assert call[:3] == ["kubeadm", "join", "--config"]
    assert "--discovery-token-unsafe-skip-ca-verification" not in call
    assert TOKEN not in " ".join(arg for c in join.calls() for arg in c)
    config = yaml.safe_load((join.state / "join.yaml").read_text())
    assert config["apiVersion"] == "kubeadm.k8s.io/v1beta4" and config["kind"] == "JoinConfiguration"
    assert config["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "172.16.0.10:6443",
        "token": TOKEN,
        "caCertHashes": [ca_hash],
    }
    assert config["nodeRegistration"] == {"name": "gpu-1", "criSocket": "unix:///run/containerd/containerd.sock"}
    assert (join.state / "join.mode").read_text().strip() == "600"
    assert not Path(call[3]).exists()
    assert result.stdout == ""
    assert TOKEN not in result.stderr and ca_hash not in result.stderr


def test_kubeadm_join_aligns_the_sandbox_image(join: StubBin, cluster_cas):
    ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)))
    assert (
        'sandbox_image = "registry.aliyuncs.com/google_containers/pause:3.10.1"'
        in (join.root / "etc/containerd/config.toml").read_text()
    )
    assert join.called("systemctl", "restart", "containerd")


def test_kubeadm_join_is_idempotent(join: StubBin, cluster_cas):
    ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)))
    join.clear()
    result = ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)))
    assert not any(c[1] in ("join", "reset") for c in join.calls("kubeadm"))
    assert not join.calls("systemctl") and not join.calls("ip")
    assert "skipping kubeadm join" in result.stderr


def test_kubeadm_join_leaves_a_rebuilt_control_planes_old_cluster_and_joins_the_new_one(join: StubBin, cluster_cas):
    """The control plane's instance was replaced: a new kubeadm init, a new CA. The worker is
    still joined to the old cluster; the same step (re-run with the new CA hash) resets it,
    removes the old pod network's leftovers, and joins the new cluster."""
    ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)))
    write(join.root / "etc/cni/net.d/10-flannel.conflist", "{}")
    write(join.root / "var/lib/cni/networks/cbr0/10.244.1.2", "old pod")
    write(join.root / "run/flannel/subnet.env", "FLANNEL_SUBNET=10.244.1.1/24\n")
    join.add("ip", body='[[ "$1 $2" == "link show" ]] && exit 0; exit 0')  # cni0 and flannel.1 exist
    shutil.copy(cluster_cas["rebuilt"][0], join.state / "ca.crt")
    join.clear()
    result = ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas, "rebuilt")))
    calls = [c[1:] for c in join.calls("kubeadm") if c[1] in ("reset", "join")]
    assert [c[0] for c in calls] == ["reset", "join"]  # left the old cluster first
    assert "joined to another cluster" in result.stderr
    assert not (join.root / "etc/cni/net.d").exists() and not (join.root / "var/lib/cni").exists()
    assert not (join.root / "run/flannel").exists()  # the old lease: flanneld writes the new cluster's
    assert join.called("kubeadm", "reset", "-f", "--cri-socket", "unix:///run/containerd/containerd.sock")
    assert join.called("ip", "link", "delete", "cni0") and join.called("ip", "link", "delete", "flannel.1")
    assert yaml.safe_load((join.state / "join.yaml").read_text())["discovery"]["bootstrapToken"]["caCertHashes"] == [
        cluster_cas["rebuilt"][1]
    ]
    # and now it is joined here: the next run skips
    join.clear()
    assert "skipping kubeadm join" in ok(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas, "rebuilt"))).stderr
    assert not any(c[1] in ("join", "reset") for c in join.calls("kubeadm"))


def test_kubeadm_join_v1beta3_before_1_31(join: StubBin, cluster_cas):
    ok(join.run("50-kubeadm-join.sh", {**JOIN, "KUBERNETES_VERSION": "1.30.14"}, stdin=join_stdin(cluster_cas)))
    assert yaml.safe_load((join.state / "join.yaml").read_text())["apiVersion"] == "kubeadm.k8s.io/v1beta3"


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (f"{TOKEN.upper()}\n{CA_HASH}\n", "token on stdin line 1 is malformed"),
        (f"{TOKEN}\nsha256:abc\n", "CA hash on stdin line 2 is malformed"),
        (f"{TOKEN}\n", "CA hash on stdin line 2 is malformed"),
        ("", "token on stdin line 1 is malformed"),
    ],
)
def test_kubeadm_join_rejects_malformed_secrets_without_echo(join: StubBin, stdin: str, message: str):
    result = failed(join.run("50-kubeadm-join.sh", JOIN, stdin=stdin), "50-kubeadm-join", message)
    assert not join.calls()
    for secret in stdin.split():
        assert secret not in result.stdout + result.stderr


def test_kubeadm_join_failure_is_redacted_and_cleans_up(join: StubBin, cluster_cas):
    (join.state / "join-fails").touch()
    result = failed(join.run("50-kubeadm-join.sh", JOIN, stdin=join_stdin(cluster_cas)), "50-kubeadm-join", "kubeadm join failed")
    assert TOKEN not in result.stderr and "0123456789abcdef" not in result.stderr
    assert "token <token> rejected" in result.stderr
    assert not list((join.root / "run/gpu-k8s").iterdir())
    assert join.called("kubeadm", "reset", "-f", "--cri-socket", "unix:///run/containerd/containerd.sock")
    assert "the node was reset" in result.stderr


# ================================================================ 60-prune-nodes.sh

KUBECTL_NODES = r"""
case "$1 $2" in
  "get nodes")
    for n in gpu-0 gpu-1 gpu-2 gpu-3; do [[ -e "$STUB_STATE/deleted-$n" ]] || echo "node/$n"; done;;
  "drain "*)
    [[ -e "$STUB_STATE/drain-fails" ]] && { echo "error: timed out waiting for pods" >&2; exit 1; }
    echo "node/$2 drained";;
  "delete node") [[ -e "$STUB_STATE/delete-fails" ]] && exit 1; touch "$STUB_STATE/deleted-$3"; echo "node \"$3\" deleted";;
esac
"""
PRUNE = {"DESIRED_NODES": "gpu-0 gpu-1", "DRAIN_TIMEOUT": "120"}


@pytest.fixture
def prune(sb: StubBin) -> StubBin:
    sb.add("kubectl", body=KUBECTL_NODES)
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    return sb


def test_prune_drains_and_deletes_nodes_not_desired(prune: StubBin):
    result = ok(prune.run("60-prune-nodes.sh", PRUNE))
    assert result.stdout == "gpu-2\ngpu-3\n"
    assert prune.calls("kubectl")[0] == [
        "kubectl",
        "get",
        "nodes",
        "-l",
        "gpu-k8s/pool,!node-role.kubernetes.io/control-plane",
        "-o",
        "name",
    ]
    assert prune.called("kubectl", "drain", "gpu-2", "--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=120s")
    assert prune.called("kubectl", "delete", "node", "gpu-3", "--wait=false")
    assert not prune.called("kubectl", "drain", "gpu-0") and not prune.called("kubectl", "delete", "node", "gpu-1")


def test_prune_is_idempotent(prune: StubBin):
    ok(prune.run("60-prune-nodes.sh", PRUNE))
    prune.clear()
    result = ok(prune.run("60-prune-nodes.sh", PRUNE))
    assert result.stdout == ""
    assert not prune.called("kubectl", "drain") and len(prune.calls("kubectl")) == 1


def test_prune_failed_drain_only_warns(prune: StubBin):
    (prune.state / "drain-fails").touch()
    result = ok(prune.run("60-prune-nodes.sh", {**PRUNE, "DESIRED_NODES": "gpu-0 gpu-1 gpu-2"}))
    assert result.stdout == "gpu-3\n"
    assert "WARNING: draining gpu-3 failed" in result.stderr
    assert prune.called("kubectl", "delete", "node", "gpu-3", "--wait=false")


def test_prune_delete_failure_names_the_step(prune: StubBin):
    (prune.state / "delete-fails").touch()
    failed(prune.run("60-prune-nodes.sh", PRUNE), "60-prune-nodes", "kubectl delete node gpu-2 failed")


def test_prune_rejects_bad_inputs(prune: StubBin):
    failed(prune.run("60-prune-nodes.sh", {**PRUNE, "DESIRED_NODES": "gpu-0 *"}), "60-prune-nodes", "DESIRED_NODES")
    failed(prune.run("60-prune-nodes.sh", {**PRUNE, "DRAIN_TIMEOUT": "2m"}), "60-prune-nodes", "DRAIN_TIMEOUT")
    assert not prune.calls()


def test_prune_unreachable_api_fails(prune: StubBin):
    prune.add("kubectl", exit_code=1, body='echo "The connection to the server was refused" >&2')
    failed(prune.run("60-prune-nodes.sh", PRUNE), "60-prune-nodes", "kubectl get nodes failed")


# ================================================================ 70-gpu-allocatable.sh

# The seed's device plugin log on a node whose containerd default runtime was runc (verbatim).
SEED_NVML_LOG = "\n".join(
    [
        "I1126 04:34:05.352152       1 main.go:256] Retreiving plugins.",
        "W1126 04:34:05.352505       1 factory.go:31] No valid resources detected, creating a null CDI handler",
        "I1126 04:34:05.352539       1 factory.go:107] "
        "Detected non-NVML platform: could not load NVML library: libnvidia-ml.so.1: "
        "cannot open shared object file: No such file or directory",
        "I1126 04:34:05.352569       1 factory.go:107] Detected non-Tegra platform: /sys/devices/soc0/family file not found",
        "E1126 04:34:05.352573       1 factory.go:115] Incompatible platform detected",
        "E1126 04:34:05.352576       1 factory.go:116] If this is a GPU node, did you configure the NVIDIA Container Toolkit?",
        "I1126 04:34:05.352590       1 main.go:287] No devices found. Waiting indefinitely.",
        "",
    ]
)
# allocatable comes from $STUB_STATE/gpu-<node> (optionally only after N polls: ready-after-<node>);
# the plugin pod line from $STUB_STATE/pods-<node>; its log from $STUB_STATE/log.
KUBECTL_GPU = r"""
if [[ "$1 $2" == "get node" ]]; then
  n=$(cat "$STUB_STATE/polls-$3" 2>/dev/null || echo 0); echo $((n + 1)) >"$STUB_STATE/polls-$3"
  after=$(cat "$STUB_STATE/ready-after-$3" 2>/dev/null || echo 0)
  if ((n >= after)); then cat "$STUB_STATE/gpu-$3" 2>/dev/null; fi
elif [[ "$1 $2" == "get pods" ]]; then
  node=""; for a in "$@"; do [[ "$a" == spec.nodeName=* ]] && node="${a#spec.nodeName=}"; done
  printf '%b' "$(cat "$STUB_STATE/pods-$node" 2>/dev/null)"
elif [[ "$1" == logs ]]; then
  cat "$STUB_STATE/log" 2>/dev/null
fi
"""
ALLOC = {
    **FAST,
    "GPU_NODES": "gpu-0 gpu-1",
    "TIMEOUT_SECONDS": "0",
    "PLUGIN_NAMESPACE": "kube-system",
    "PLUGIN_SELECTOR": "name=nvidia-device-plugin-ds",
}


@pytest.fixture
def alloc(sb: StubBin) -> StubBin:
    sb.add("kubectl", body=KUBECTL_GPU)
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    write(sb.state / "gpu-gpu-0", "1")
    return sb


def test_allocatable_prints_json_per_node(alloc: StubBin):
    write(alloc.state / "gpu-gpu-1", "2")
    result = ok(alloc.run("70-gpu-allocatable.sh", ALLOC))
    assert json.loads(result.stdout) == {"gpu-0": 1, "gpu-1": 2}
    assert alloc.called("kubectl", "get", "node", "gpu-1", "-o", "jsonpath={.status.allocatable.nvidia\\.com/gpu}")


def test_allocatable_polls_until_the_plugin_registers(alloc: StubBin):
    write(alloc.state / "gpu-gpu-1", "1")
    write(alloc.state / "ready-after-gpu-1", "3")
    result = ok(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "TIMEOUT_SECONDS": "30"}))
    assert json.loads(result.stdout) == {"gpu-0": 1, "gpu-1": 1}
    assert len([c for c in alloc.calls("kubectl") if c[3] == "gpu-1"]) == 4
    assert len([c for c in alloc.calls("kubectl") if c[3] == "gpu-0"]) == 1  # a ready node is not asked again


def test_allocatable_names_the_nvml_cause(alloc: StubBin):
    write(alloc.state / "pods-gpu-1", "nvidia-device-plugin-daemonset-s97vk\\t\\n")
    write(alloc.state / "log", SEED_NVML_LOG)
    result = failed(
        alloc.run("70-gpu-allocatable.sh", ALLOC), "70-gpu-allocatable", "node gpu-1 has no allocatable nvidia.com/gpu"
    )
    assert "containerd's default runtime is not nvidia (NVIDIA Container Toolkit not configured)" in result.stderr
    assert "No devices found. Waiting indefinitely." in result.stderr  # the log lines are quoted
    assert "node gpu-0" not in result.stderr
    assert result.stdout == ""
    assert alloc.called(
        "kubectl",
        "get",
        "pods",
        "-n",
        "kube-system",
        "-l",
        "name=nvidia-device-plugin-ds",
        "--field-selector",
        "spec.nodeName=gpu-1",
    )
    assert alloc.called("kubectl", "logs", "-n", "kube-system", "nvidia-device-plugin-daemonset-s97vk", "--tail=20")


def test_allocatable_names_the_image_pull_cause(alloc: StubBin):
    write(alloc.state / "pods-gpu-1", "nvidia-device-plugin-daemonset-x7k2p\\tImagePullBackOff \\n")
    write(
        alloc.state / "log",
        'Error from server (BadRequest): container "nvidia-device-plugin-ctr" is waiting to start: '
        "trying and failing to pull image",
    )
    result = failed(alloc.run("70-gpu-allocatable.sh", ALLOC), "70-gpu-allocatable")
    assert "cannot pull the device plugin image: set gpu-k8s:registryMirrors" in result.stderr
    assert "trying and failing to pull image" in result.stderr


def test_allocatable_names_the_driver_cause(alloc: StubBin):
    write(alloc.state / "pods-gpu-1", "nvidia-device-plugin-daemonset-abcde\\t\\n")
    write(
        alloc.state / "log",
        "I1126 04:46:34.021064 1 factory.go:107] Detected NVML platform: found NVML library\n"
        "I1126 04:46:34.021090 1 main.go:287] No devices found. Waiting indefinitely.\n",
    )
    result = failed(alloc.run("70-gpu-allocatable.sh", ALLOC), "70-gpu-allocatable")
    assert "no GPU visible: check the driver (nvidia-smi)" in result.stderr


def test_allocatable_names_a_missing_plugin_pod(alloc: StubBin):
    result = failed(alloc.run("70-gpu-allocatable.sh", ALLOC), "70-gpu-allocatable")
    assert "no device plugin pod on the node (taints/nodeSelector)" in result.stderr
    assert not alloc.calls("kubectl") or not alloc.called("kubectl", "logs")


def test_allocatable_time_slicing_needs_replicas_per_node(alloc: StubBin):
    write(alloc.state / "gpu-gpu-0", "4")
    write(alloc.state / "gpu-gpu-1", "1")  # the plugin's sharing config did not apply there
    write(alloc.state / "pods-gpu-1", "nvidia-device-plugin-daemonset-q2w3e\\t\\n")
    write(alloc.state / "log", "I1126 server.go:125] Registered device plugin for 'nvidia.com/gpu' with Kubelet\n")
    result = failed(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "MIN_GPUS_PER_NODE": "4"}), "70-gpu-allocatable")
    assert "node gpu-1 has 1 allocatable nvidia.com/gpu (need 4)" in result.stderr
    assert "time-slicing config is not applied" in result.stderr
    write(alloc.state / "gpu-gpu-1", "4")
    assert json.loads(ok(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "MIN_GPUS_PER_NODE": "4"})).stdout) == {
        "gpu-0": 4,
        "gpu-1": 4,
    }


def test_allocatable_rejects_bad_inputs(alloc: StubBin):
    failed(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "GPU_NODES": ""}), "70-gpu-allocatable", "GPU_NODES")
    failed(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "TIMEOUT_SECONDS": "5m"}), "70-gpu-allocatable", "TIMEOUT_SECONDS")
    failed(alloc.run("70-gpu-allocatable.sh", {**ALLOC, "MIN_GPUS_PER_NODE": "0"}), "70-gpu-allocatable", "MIN_GPUS_PER_NODE")
    assert not alloc.calls()


# ================================================================ 80-gpu-test-result.sh

# Per pod <ns>/<name>: $STUB_STATE/<name>.{phase,node,log,events,messages} (tools/mock_cluster.py).
KUBECTL_TEST = KUBECTL_STUB_BODY
TEST = {**FAST, "TEST_PODS": "default/gpu-test", "SUCCESS_PATTERN": "Test PASSED", "TIMEOUT_SECONDS": "0"}


def ended(result: subprocess.CompletedProcess, code: int, verdict: str) -> dict:
    """80's exit status per verdict (0 PASSED, 2 FAILED, 3 TIMEOUT), its JSON on stdout either way."""
    assert result.returncode == code, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    report = json.loads(result.stdout)
    assert report["verdict"] == verdict and report["passed"] is (verdict == "PASSED")
    if code:
        assert f"[gpu-k8s 80-gpu-test-result] ERROR: GPU test {verdict}:" in result.stderr
    return report


def pod_state(sb: StubBin, name: str, **files: str) -> None:
    for suffix, text in files.items():
        write(sb.state / f"{name}.{suffix}", text)


@pytest.fixture
def gtest(sb: StubBin) -> StubBin:
    sb.add("kubectl", body=KUBECTL_TEST)
    write(sb.root / "etc/kubernetes/admin.conf", ADMIN_CONF)
    return sb


def test_gpu_test_passed(gtest: StubBin):
    pod_state(gtest, "gpu-test", phase="Succeeded", node="gpu-0", log="[Vector addition of 50000 elements]\nTest PASSED\nDone\n")
    before = datetime.now(UTC).replace(microsecond=0)
    result = ok(gtest.run("80-gpu-test-result.sh", TEST))
    report = json.loads(result.stdout)
    # when the verdict was read, in UTC (make outputs tells a current verdict from a stale one)
    checked = datetime.strptime(report.pop("checkedAt"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= checked <= datetime.now(UTC)
    assert report == {
        "passed": True,
        "verdict": "PASSED",
        "pods": [
            {
                "pod": "default/gpu-test",
                "node": "gpu-0",
                "phase": "Succeeded",
                "passed": True,
                "timedOut": False,
                "log": "[Vector addition of 50000 elements]\nTest PASSED\nDone",
                "diagnosis": "",
            }
        ],
    }
    assert gtest.called("kubectl", "logs", "-n", "default", "gpu-test", "--tail=30")


def test_gpu_test_pending_reports_the_scheduler_reason(gtest: StubBin):
    pod_state(
        gtest,
        "gpu-test",
        phase="Pending",
        events="FailedScheduling: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available\n",
    )
    result = gtest.run("80-gpu-test-result.sh", TEST)
    report = ended(result, 3, "TIMEOUT")
    [pod] = report["pods"]
    assert pod["phase"] == "Pending" and pod["passed"] is False and pod["node"] == "" and pod["timedOut"] is True
    assert "Insufficient nvidia.com/gpu" in pod["diagnosis"]
    assert f"ERROR: default/gpu-test on no node: Pending: {pod['diagnosis']}" in result.stderr
    assert gtest.called("kubectl", "get", "events", "-n", "default", "--field-selector", "involvedObject.name=gpu-test")


def test_gpu_test_cuda_requirement_needs_a_newer_driver(gtest: StubBin):
    pod_state(
        gtest,
        "gpu-test",
        phase="Failed",
        node="gpu-0",
        messages="StartError failed to create containerd task: nvidia-container-cli: requirement error: "
        "unsatisfied condition: cuda>=12.5, please update your driver to a newer version\n",
    )
    report = ended(gtest.run("80-gpu-test-result.sh", TEST), 2, "FAILED")
    assert "newer driver (unsatisfied condition: cuda>=12.5)" in report["pods"][0]["diagnosis"]


def test_gpu_test_succeeded_without_the_pattern_fails(gtest: StubBin):
    pod_state(gtest, "gpu-test", phase="Succeeded", node="gpu-0", log="\n")
    report = ended(gtest.run("80-gpu-test-result.sh", {**TEST, "SUCCESS_PATTERN": "/device:GPU:0"}), 2, "FAILED")
    assert 'lacks "/device:GPU:0"' in report["pods"][0]["diagnosis"]


def test_gpu_test_one_failure_fails_the_whole_test(gtest: StubBin):
    pod_state(gtest, "a", phase="Succeeded", node="gpu-0", log="/device:GPU:0\n")
    pod_state(gtest, "b", phase="Failed", node="gpu-1", log="Traceback (most recent call last):\nRuntimeError: no GPU\n")
    env = {**TEST, "TEST_PODS": "gpu-test/a gpu-test/b", "SUCCESS_PATTERN": "/device:GPU:0"}
    result = gtest.run("80-gpu-test-result.sh", env)
    report = ended(result, 2, "FAILED")
    assert [(p["pod"], p["passed"]) for p in report["pods"]] == [("gpu-test/a", True), ("gpu-test/b", False)]
    assert "RuntimeError: no GPU" in report["pods"][1]["log"]
    assert "the pod failed; last log line: RuntimeError: no GPU" in report["pods"][1]["diagnosis"]
    assert "ERROR: gpu-test/b on gpu-1: Failed: the pod failed" in result.stderr
    assert "gpu-test/a on gpu-0: Failed" not in result.stderr and "1 of 2 test pods did not pass" in result.stderr


def test_gpu_test_waits_for_the_pod_to_finish(gtest: StubBin):
    pod_state(gtest, "gpu-test", node="gpu-0", log="Test PASSED\n")
    gtest.add(
        "kubectl",
        body='n=$(cat "$STUB_STATE/n" 2>/dev/null || echo 0); echo $((n + 1)) >"$STUB_STATE/n"\n'
        'if ((n >= 3)); then echo Succeeded >"$STUB_STATE/gpu-test.phase"; else echo Running >"$STUB_STATE/gpu-test.phase"; fi\n'
        + KUBECTL_TEST,
    )
    report = json.loads(ok(gtest.run("80-gpu-test-result.sh", {**TEST, "TIMEOUT_SECONDS": "30"})).stdout)
    assert report["passed"] is True


def test_gpu_test_log_is_json_safe(gtest: StubBin):
    log = 'quote " backslash \\ tab \t unicode ✓ /device:GPU:0\n'
    pod_state(gtest, "gpu-test", phase="Succeeded", node="gpu-0", log=log)
    report = json.loads(ok(gtest.run("80-gpu-test-result.sh", {**TEST, "SUCCESS_PATTERN": "/device:GPU:0"})).stdout)
    assert report["pods"][0]["log"] == log.rstrip("\n")


def test_gpu_test_unusable_kubectl_exits_non_zero(gtest: StubBin):
    (gtest.state / "api-down").touch()
    result = failed(gtest.run("80-gpu-test-result.sh", TEST), "80-gpu-test-result", "cannot reach the API server")
    assert result.stdout == ""


# ================================================================ lib/common.sh, in place and rendered


def rendered(sb: StubBin, script: str) -> str:
    """render_script(script) written where no lib/ lies next to it, as on the node (/opt/gpu-k8s)."""
    node = sb.state.parent / "opt-gpu-k8s"
    node.mkdir(exist_ok=True)
    path = node / script
    path.write_text(render_script(script))
    assert not (node / "lib").exists()
    return str(path)  # StubBin.run(SCRIPTS_DIR / <absolute path>) runs this file


@pytest.mark.parametrize(
    ("fixture", "script", "env", "hint"),
    [
        ("prep", "10-driver-prepare.sh", {**FAST, "GPU_DRIVER": "tesla"}, "its apt mirror"),
        ("rt", "20-container-runtime.sh", RUNTIME, "gpu-k8s:kubernetesMirror"),
        ("kube", "30-kube-packages.sh", KUBE, "gpu-k8s:kubernetesMirror"),
    ],
)
def test_apt_update_gives_up_after_5_tries_naming_what_to_check(request, fixture, script, env, hint):
    sb: StubBin = request.getfixturevalue(fixture)
    (sb.state / "apt-fail-update").touch()
    step = script.removesuffix(".sh")
    result = failed(sb.run(script, env), step, f"apt-get update failed 5 times: check the node's outbound network and {hint}")
    assert len([c for c in sb.calls("apt-get") if "update" in c]) == 5
    assert f"[gpu-k8s {step}] WARNING: apt-get update failed (try 5 of 5)" in result.stderr
    assert all(c[1:4] == ["-o", "DPkg::Lock::Timeout=600", "update"] for c in sb.calls("apt-get"))


# One early failure per node script: the rendered file, alone, fails exactly like the script in place.
EARLY_FAILURES = [
    ("00-wait-boot.sh", {}, "", "cloud-init failed (exit 1)"),
    ("10-driver-prepare.sh", {"GPU_DRIVER": "cuda"}, "", "GPU_DRIVER must be tesla or grid"),
    ("11-nvidia-driver.sh", {"GPU_DRIVER": "cuda"}, "", "GPU_DRIVER must be tesla or grid"),
    ("12-gpu-verify.sh", {}, "", "nvidia-smi not found"),
    ("20-container-runtime.sh", {"CONTAINER_TOOLKIT_VERSION": "latest"}, "", "CONTAINER_TOOLKIT_VERSION must look like"),
    ("21-docker-gpu-check.sh", {}, "", "DOCKER_TEST_IMAGE must name an image"),
    ("25-prefetch-images.sh", {"KUBEADM_IMAGE_REPOSITORY": "registry.k8s.io"}, "", "KUBERNETES_VERSION is required"),
    ("30-kube-packages.sh", {"KUBERNETES_VERSION": "v1"}, "", "KUBERNETES_VERSION must look like"),
    ("35-image-clean.sh", {}, "", "nvidia-smi fails on the builder"),
    ("40-kubeadm-init.sh", {"KUBERNETES_VERSION": "v1"}, "", "KUBERNETES_VERSION must look like"),
    ("41-kubeconfig.sh", {"API_SERVER_IP": "x"}, "", "API_SERVER_IP must be an IPv4 address"),
    ("42-ca-cert-hash.sh", {}, "", "/etc/kubernetes/pki/ca.crt not found"),
    ("43-join-token.sh", {}, "not-a-token\n", "the bootstrap token on stdin is malformed"),
    ("50-kubeadm-join.sh", {}, "", "CONTROL_PLANE_ENDPOINT must be ip:port"),
    ("60-prune-nodes.sh", {"DRAIN_TIMEOUT": "soon"}, "", "DRAIN_TIMEOUT must be a number"),
    ("70-gpu-allocatable.sh", {}, "", "GPU_NODES is empty"),
    ("80-gpu-test-result.sh", {}, "", "TEST_PODS must be space-separated"),
]


def test_early_failures_cover_every_node_script():
    assert {s for s, *_ in EARLY_FAILURES} == {p.name for p in SCRIPTS_DIR.glob("*.sh")}


@pytest.mark.parametrize(("script", "env", "stdin", "message"), EARLY_FAILURES, ids=[s for s, *_ in EARLY_FAILURES])
def test_rendered_script_runs_alone_and_fails_like_the_script_in_place(sb: StubBin, script, env, stdin, message):
    sb.add("cloud-init", exit_code=1)
    step = script.removesuffix(".sh")
    in_place = failed(sb.run(script, {**FAST, **env}, stdin=stdin), step, message)
    alone = failed(sb.run(rendered(sb, script), {**FAST, **env}, stdin=stdin), step, message)
    timing = re.compile(r"TIMING seconds=[0-9.]+ ")  # wall time differs run to run

    def same(r):
        return (r.returncode, r.stdout, timing.sub("TIMING ", r.stderr))

    assert same(alone) == same(in_place)
    assert "lib/common.sh" not in alone.stderr  # nothing tried to source it


def test_rendered_join_aligns_the_sandbox_image_with_the_inlined_helper(join: StubBin, cluster_cas):
    result = ok(join.run(rendered(join, "50-kubeadm-join.sh"), JOIN, stdin=join_stdin(cluster_cas)))
    assert (
        'sandbox_image = "registry.aliyuncs.com/google_containers/pause:3.10.1"'
        in (join.root / "etc/containerd/config.toml").read_text()
    )
    assert join.called("systemctl", "restart", "containerd")
    assert "[gpu-k8s 50-kubeadm-join] containerd now uses registry.aliyuncs.com/google_containers/pause:3.10.1" in result.stderr
    assert TOKEN not in result.stdout + result.stderr


# ================================================================ secrets


def test_no_script_reads_secrets_from_the_environment():
    """Secret inputs come on stdin: the scripts that take them never read a token/URL variable."""
    for name in ("11-nvidia-driver.sh", "43-join-token.sh", "50-kubeadm-join.sh"):
        text = render_script(name)  # as it runs on the node: lib/common.sh included
        for var in ("${TOKEN:-", "${JOIN_TOKEN", "${GRID_URL:-", "${GRID_DRIVER_URL", "${CA_HASH:-"):
            assert var not in text, f"{name} reads {var} from the environment"
        assert "read -r" in text


# --- 35-image-clean (gpu-k8s:nodeImage bake) ----------------------------------------------


def test_image_clean_removes_the_machines_identity_and_keeps_what_the_image_is_for(sb: StubBin):
    root = sb.root
    for path, text in {
        "etc/machine-id": "0123456789abcdef\n",
        "etc/ssh/ssh_host_ed25519_key": "key",
        "root/.ssh/authorized_keys": "ssh-rsa builder",
        "root/.bash_history": "history",
        "var/lib/dhcp/dhclient.eth0.leases": "lease",
        "var/cache/gpu-k8s/NVIDIA-Linux-x86_64-535.129.03.run": "run",
        "etc/kubernetes/kubelet.conf": "stale",
        "etc/containerd/config.toml": "kept",
        "etc/modprobe.d/blacklist-nouveau.conf": "kept",
    }.items():
        write(root / path, text)
    sb.add("nvidia-smi", stdout="535.129.03\n").add("systemctl", exit_code=3).add("apt-get").add("journalctl").add("sync")
    sb.add("fuser", exit_code=1)  # no process holds an apt or dpkg lock
    sb.add("ctr", stdout="docker.io/flannel/flannel:v0.26.7\nsha256:abc\nnvcr.io/nvidia/k8s-device-plugin:v0.20.0\n")
    sb.add("nvidia-ctk", stdout="NVIDIA Container Toolkit CLI version 1.17.8\n")
    sb.add("containerd", stdout="containerd github.com/containerd/containerd 1.7.28 \n").add(
        "kubelet", stdout="Kubernetes v1.34.2\n"
    )
    sb.add("cloud-init", body='[[ "$*" == "clean --help" ]] && echo "usage: cloud-init clean [--logs] [--machine-id]"')
    result = ok(sb.run("35-image-clean.sh", FAST))
    manifest = json.loads(result.stdout)
    assert manifest == {
        "containerToolkit": "1.17.8",
        "containerd": "1.7.28",
        "driver": "535.129.03",
        "images": ["docker.io/flannel/flannel:v0.26.7", "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"],
        "kubelet": "v1.34.2",
        "rebootRequired": False,
    }
    assert json.loads((root / "etc/gpu-k8s/image.json").read_text()) == manifest
    assert (root / "etc/machine-id").read_text() == ""  # empty: systemd makes a new id at first boot
    for gone in ("etc/ssh/ssh_host_ed25519_key", "root/.ssh/authorized_keys", "root/.bash_history",
                 "var/lib/dhcp/dhclient.eth0.leases", "var/cache/gpu-k8s/NVIDIA-Linux-x86_64-535.129.03.run",
                 "etc/kubernetes/kubelet.conf"):  # fmt: skip
        assert not (root / gone).exists(), gone
    assert (root / "etc/containerd/config.toml").exists() and (root / "etc/modprobe.d/blacklist-nouveau.conf").exists()
    assert sb.called("cloud-init", "clean", "--logs", "--machine-id")


def test_image_clean_records_a_pending_reboot_and_empties_the_builders_logs(sb: StubBin):
    write(sb.root / "var/run/reboot-required", "*** System restart required ***")
    write(sb.root / "var/log/syslog", "bake-tesla-0123abcd kernel: eth0 10.0.1.7")
    write(sb.root / "etc/nvidia/ClientConfigToken/client_configuration_token.tok", "token")
    for tool in ("nvidia-smi", "systemctl", "apt-get", "journalctl", "sync", "ctr", "nvidia-ctk", "containerd", "kubelet"):
        sb.add(tool)
    sb.add("fuser", exit_code=1)
    sb.add("cloud-init", body='[[ "$*" == "clean --help" ]] && echo "usage: cloud-init clean [--logs]"')
    result = ok(sb.run("35-image-clean.sh", FAST))
    assert json.loads(result.stdout)["rebootRequired"] is True and "a reboot is pending" in result.stderr
    assert (sb.root / "var/log/syslog").read_text() == ""
    assert not list((sb.root / "etc/nvidia/ClientConfigToken").iterdir())
    assert sb.called("systemctl", "stop", "apt-daily.timer", "apt-daily-upgrade.timer", "unattended-upgrades")
    assert sb.called("cloud-init", "clean", "--logs")  # no --machine-id there: /etc/machine-id emptied by hand


def test_image_clean_refuses_without_fuser_and_waits_for_apt_lists(sb: StubBin):
    """No fuser: a held lock cannot be told from a free one, so nothing is imaged. With it, each
    apt and dpkg lock 00-wait-boot knows is waited for."""
    sb.add("nvidia-smi", stdout="535.129.03\n").add("systemctl")
    failed(sb.run("35-image-clean.sh", FAST), "35-image-clean", "fuser not found (package psmisc)")
    sb.add("fuser", exit_code=0)  # apt still running: every wait finds the locks held
    failed(sb.run("35-image-clean.sh", {**FAST, "LOCK_WAIT_SECONDS": "0"}), "35-image-clean", "dpkg is still locked")
    assert sb.calls("fuser")[-1][-2:] == [f"{sb.root}/var/lib/apt/lists/lock", f"{sb.root}/var/cache/apt/archives/lock"]
