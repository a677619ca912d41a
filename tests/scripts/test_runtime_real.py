"""Step 20 (container runtime) against the REAL containerd and nvidia-ctk.

The binaries come from ../shared/tools/bin (see its README: containerd 1.7.28, 2.1.4,
2.1.5; nvidia-ctk 1.17.8, 1.18.0). The step runs exactly as rendered for a node
(render_script: lib/common.sh inlined), with those binaries on PATH as ``containerd`` and
``nvidia-ctk``; only what needs a network or a daemon (apt-get, curl, gpg, systemctl,
kubeadm) is a stub. Every host path lives under GPU_K8S_ROOT, as in the other script tests.

The verdict is containerd's own: ``containerd --config config.toml config dump``, the
merged config (imports included) that containerd would run with, parsed as TOML.

Matrix: {containerd} x {nvidia-ctk} x {no config; `config default`; Debian's minimal
config; a config left by a failed run (nvidia-ctk done, SystemdCgroup and config_path not
yet: where the step used to die)}. Each case runs step 20 and the pause-image alignment of
40/50 twice; the cases run concurrently (module fixture), each test asserts on its own.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from components.steps import render_script
from tests.stubs import SCRIPTS_DIR, StubBin

TOOLS = Path(__file__).resolve().parents[3] / "shared" / "tools" / "bin"
CONTAINERD_VERSIONS = ("1.7.28", "2.1.4", "2.1.5")
TOOLKIT_VERSIONS = ("1.17.8", "1.18.0")
STATES = ("no-config", "config-default", "debian-minimal", "failed-run")

pytestmark = pytest.mark.skipif(
    not TOOLS.is_dir(), reason=f"real containerd/nvidia-ctk binaries not found at {TOOLS} (CI has them)"
)

# Debian's containerd package ships this /etc/containerd/config.toml (as quoted widely, e.g.
# in nydus-snapshotter's docs): CRI on, CNI bin_dir /usr/lib/cni, no runc table.
DEBIAN_MINIMAL = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""
MIRRORS = "docker.io=https://abc.mirror.aliyuncs.com;registry.k8s.io=https://k8s.m.daocloud.io"
REPO = "registry.aliyuncs.com/google_containers"
K8S = "1.34.2"
PAUSE = f"{REPO}/pause:3.10.1"  # what kubeadm v1.34.2 lists (stubbed below, as in the 40/50 tests)
KUBEADM = r"""
repo=""; prev=""; for a in "$@"; do [[ "$prev" == --image-repository ]] && repo="$a"; prev="$a"; done
case "$*" in
  "config images list"*) printf '%s\n' "$repo/kube-apiserver:v1.34.2" "$repo/pause:3.10.1" "$repo/etcd:3.6.4-0";;
esac
"""
GUARD = r"""
if [[ "$1 $2" == "runtime configure" && " $* " != *" --drop-in-config "* && " $* " != *" --help "* ]]; then
  echo "test guard: nvidia-ctk >= 1.18 without --drop-in-config writes the HOST's /etc/containerd/config.d" >&2; exit 97
fi
"""


def _tool(name: str, tmp: Path) -> Path:
    """The binary itself, or a +x copy when the shared folder lost the run bit."""
    path = TOOLS / name
    if os.access(path, os.X_OK):
        return path
    copy = tmp / name
    shutil.copy(path, copy)
    copy.chmod(copy.stat().st_mode | stat.S_IXUSR)
    return copy


def _node(tmp_path: Path, containerd: str, toolkit: str) -> StubBin:
    sb = StubBin(tmp_path)
    (sb.dir / "containerd").symlink_to(_tool(f"containerd-{containerd}", tmp_path))
    ctk = _tool(f"nvidia-ctk-{toolkit}", tmp_path)
    # A logged wrapper; 1.18's default drop-in path is the host's /etc: never write there from a test.
    sb.add("nvidia-ctk", body=(GUARD if toolkit >= "1.18" else "") + f'exec {ctk} "$@"')
    for name in ("apt-get", "curl", "gpg", "systemctl"):
        sb.add(name)
    sb.add("kubeadm", body=KUBEADM)
    (sb.root / "etc").mkdir()
    return sb


def _containerd(sb: StubBin, *args: str) -> str:
    return subprocess.run([str(sb.dir / "containerd"), *args], capture_output=True, text=True, check=True, timeout=30).stdout


def _prepare(sb: StubBin, state: str, toolkit: str) -> None:
    config = sb.root / "etc/containerd/config.toml"
    if state == "no-config":
        return
    config.parent.mkdir(parents=True)
    if state == "debian-minimal":
        config.write_text(DEBIAN_MINIMAL)
        return
    config.write_text(_containerd(sb, "config", "default"))
    if state == "failed-run":
        # Where the step used to die: nvidia-ctk ran (1.18: drop-in + imports), SystemdCgroup
        # and config_path not set yet.
        drop_in = ["--drop-in-config", str(config.parent / "config.d/99-nvidia.toml")] if toolkit >= "1.18" else []
        subprocess.run(
            [str(sb.dir / "nvidia-ctk"), "runtime", "configure", "--runtime=containerd", "--set-as-default"]
            + [f"--config={config}", *drop_in],
            capture_output=True,
            check=True,
            timeout=30,
        )


def _run_step(sb: StubBin, toolkit: str, nvidia: bool = True) -> subprocess.CompletedProcess:
    script = sb.state / "opt/gpu-k8s/20-container-runtime.sh"  # alone, as on the node
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(render_script("20-container-runtime.sh"))
    env = {
        "PATH": str(sb.dir),
        "HOME": str(sb.state),
        "STUB_STATE": str(sb.state),
        "GPU_K8S_ROOT": str(sb.root),
        "LANG": "C.UTF-8",
        "POLL_SECONDS": "0",
        "CONTAINER_TOOLKIT_VERSION": toolkit,
        "PACKAGE_MIRROR": "aliyun",
        "REGISTRY_MIRRORS": MIRRORS,
        "INSTALL_DOCKER": "false",
        "NVIDIA_RUNTIME": str(nvidia).lower(),
        "GPU_ISOLATION": "true",
    }
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False)


def _align_pause(sb: StubBin) -> subprocess.CompletedProcess:
    """What 40-kubeadm-init / 50-kubeadm-join do to the same files: the lib's align_sandbox_image."""
    lib = SCRIPTS_DIR / "lib/common.sh"
    config = sb.root / "etc/containerd/config.toml"
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; STEP=test; source "{lib}"; align_sandbox_image "$@"', "-", REPO, K8S, str(config)],
        env={"PATH": str(sb.dir), "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "etc").rglob("*")) if p.is_file()}


def _merged(sb: StubBin) -> dict:
    return tomllib.loads(_containerd(sb, "--config", str(sb.root / "etc/containerd/config.toml"), "config", "dump"))


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstderr:\n{result.stderr}"


@dataclass
class Outcome:
    """One matrix case, run to the end; the test asserts on it."""

    first: subprocess.CompletedProcess
    align: subprocess.CompletedProcess
    merged: dict | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    backups: list[str] = field(default_factory=list)
    second: subprocess.CompletedProcess | None = None
    align_again: subprocess.CompletedProcess | None = None
    files_again: dict[str, bytes] = field(default_factory=dict)
    calls_again: list[list[str]] = field(default_factory=list)


def _scenario(tmp: Path, containerd: str, toolkit: str, state: str) -> Outcome:
    """Step 20 (then the pause alignment of 40/50) twice on one node; stops at the first failure."""
    sb = _node(tmp, containerd, toolkit)
    _prepare(sb, state, toolkit)
    out = Outcome(first=_run_step(sb, toolkit), align=_align_pause(sb))
    if out.first.returncode or out.align.returncode:
        return out
    out.merged = _merged(sb)
    out.files = _snapshot(sb.root)
    out.backups = [b.read_text() for b in (sb.root / "etc/containerd").glob("config.toml.gpu-k8s-*.bak")]
    sb.clear()
    out.second, out.align_again = _run_step(sb, toolkit), _align_pause(sb)
    out.files_again = _snapshot(sb.root)
    out.calls_again = sb.calls()
    return out


CASES = [(c, t, s) for c in CONTAINERD_VERSIONS for t in TOOLKIT_VERSIONS for s in STATES]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str, str], Future]]:
    """All cases at once, one per CPU (each is a chain of short real processes)."""
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    futures = {case: pool.submit(_scenario, tmp_path_factory.mktemp("-".join(case)), *case) for case in CASES}
    yield futures
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize(("containerd", "toolkit", "state"), CASES, ids=["-".join(c) for c in CASES])
def test_step_20_gives_containerd_the_nvidia_default_and_systemd_cgroups(outcomes, containerd, toolkit, state):
    out: Outcome = outcomes[(containerd, toolkit, state)].result(timeout=120)
    _ok(out.first)
    _ok(out.align)

    merged = out.merged
    plugins = merged["plugins"]
    if containerd.startswith("1."):
        assert merged["version"] == 2
        cri = plugins["io.containerd.grpc.v1.cri"]
        runtime, sandbox, registry = cri["containerd"], cri["sandbox_image"], cri["registry"]
    else:
        assert merged["version"] == 3
        runtime = plugins["io.containerd.cri.v1.runtime"]["containerd"]
        images = plugins["io.containerd.cri.v1.images"]
        sandbox, registry = images["pinned_images"]["sandbox"], images["registry"]
    runtimes = runtime["runtimes"]
    assert runtime["default_runtime_name"] == "nvidia"
    assert runtimes["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert runtimes["nvidia"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["runc"]["options"]["SystemdCgroup"] is True
    assert runtimes["nvidia"]["options"]["SystemdCgroup"] is True
    assert sandbox == PAUSE
    assert registry["config_path"] == "/etc/containerd/certs.d"
    hosts = out.files["etc/containerd/certs.d/docker.io/hosts.toml"].decode()
    assert tomllib.loads(hosts)["host"]["https://abc.mirror.aliyuncs.com"]["capabilities"] == ["pull", "resolve"]
    assert ("etc/containerd/config.d/99-nvidia.toml" in out.files) == (toolkit >= "1.18")
    # GPU isolation, written by the real nvidia-ctk config: only the plugin's volume-mount list counts.
    toolkit_config = tomllib.loads(out.files["etc/nvidia-container-runtime/config.toml"].decode())
    assert toolkit_config["accept-nvidia-visible-devices-envvar-when-unprivileged"] is False
    assert toolkit_config["accept-nvidia-visible-devices-as-volume-mounts"] is True
    assert out.backups == ([DEBIAN_MINIMAL] if state == "debian-minimal" else [])

    # A second run (and a second alignment) changes nothing and restarts nothing.
    _ok(out.second)
    _ok(out.align_again)
    assert out.files_again == out.files
    calls = out.calls_again
    assert not [c for c in calls if c[:3] == ["systemctl", "restart", "containerd"]]
    assert not [c for c in calls if c[0] == "apt-get"]
    assert not [c for c in calls if c[0] == "nvidia-ctk" and "--runtime=containerd" in c]
    assert "nvidia is already containerd's default runtime, skipping" in out.second.stderr
    assert "unchanged, not restarting containerd" in out.second.stderr


@pytest.mark.parametrize("containerd", CONTAINERD_VERSIONS)
def test_step_20_on_a_node_without_a_gpu_keeps_runc_the_default(tmp_path: Path, containerd: str):
    sb = _node(tmp_path, containerd, "1.18.0")
    _ok(_run_step(sb, "1.18.0", nvidia=False))
    merged = _merged(sb)
    cri = "io.containerd.grpc.v1.cri" if containerd.startswith("1.") else "io.containerd.cri.v1.runtime"
    runtime = merged["plugins"][cri]["containerd"]
    assert runtime["default_runtime_name"] == "runc"
    assert "nvidia" not in runtime["runtimes"]
    assert runtime["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert not (sb.root / "etc/containerd/config.d").exists()


# A hand-written config: CRI on, a runc table, no options table under it.
HAND_WRITTEN = {
    "1.7.28": 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
    '  runtime_type = "io.containerd.runc.v2"\n',
    "2.1.5": "version = 3\n\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n"
    "  runtime_type = 'io.containerd.runc.v2'\n",
}


@pytest.mark.parametrize("containerd", sorted(HAND_WRITTEN))
def test_step_20_adds_runc_options_to_a_hand_written_config(tmp_path: Path, containerd: str):
    sb = _node(tmp_path, containerd, "1.17.8")
    config = sb.root / "etc/containerd/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(HAND_WRITTEN[containerd])
    _ok(_run_step(sb, "1.17.8"))
    assert not list(config.parent.glob("*.bak"))  # kept (nvidia-ctk reformats it), not replaced
    cri = "io.containerd.grpc.v1.cri" if containerd.startswith("1.") else "io.containerd.cri.v1.runtime"
    runtime = _merged(sb)["plugins"][cri]["containerd"]
    assert runtime["default_runtime_name"] == "nvidia"
    assert runtime["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert runtime["runtimes"]["nvidia"]["options"]["SystemdCgroup"] is True
