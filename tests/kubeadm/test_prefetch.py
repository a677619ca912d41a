"""Pull while the driver builds: the image list (pure), the step in the plan, and 25-prefetch-images.sh."""

from __future__ import annotations

import pytest
from helpers import dependency_names, env_of, kinds, run_stack

from components.facts import catalog
from components.gpu import images as gpu_images
from components.kubeadm import prefetch
from tests.stubs import StubBin
from tools.harness import ProgramRun, reveal

SCRIPT = "25-prefetch-images.sh"
FAST = {"POLL_SECONDS": "0"}

# --- pure --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "qualified"),
    [
        ("ubuntu:22.04", "docker.io/library/ubuntu:22.04"),
        ("tensorflow/tensorflow:2.6.0-gpu", "docker.io/tensorflow/tensorflow:2.6.0-gpu"),
        ("nvcr.io/nvidia/k8s-device-plugin:v0.20.0", "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"),
        ("localhost/x:1", "localhost/x:1"),
        ("registry:5000/x:1", "registry:5000/x:1"),
    ],
)
def test_qualify(image, qualified):
    assert prefetch.qualify(image) == qualified


def test_images_per_node_kind_and_pool():
    a10 = catalog.profile_for("ecs.gn7i-c8g1.2xlarge")
    vgpu = catalog.profile_for("ecs.sgn7i-vws-m2s.xlarge")
    gpu = gpu_images.gpu_images(
        device_plugin_version="v0.20.0",
        test_image="tensorflow/tensorflow:2.6.0-gpu",
        exporter_version="4.6.0-4.8.3",
        pools={"train": a10, "vgpu": vgpu},
    )
    images = prefetch.node_images("v0.26.7", gpu)
    flannel = ("docker.io/flannel/flannel:v0.26.7", "docker.io/flannel/flannel-cni-plugin:v1.6.2-flannel1")
    plugin = "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"
    tf = "docker.io/tensorflow/tensorflow:2.6.0-gpu"
    assert images.for_node("control-plane", has_gpu=False) == flannel
    assert images.for_node("vgpu", has_gpu=True) == (*flannel, plugin, tf)  # DCGM skips vGPU guests
    train = images.for_node("train", has_gpu=True)
    assert train[:4] == (*flannel, plugin, tf)  # in the order GPU-ready needs them
    assert train[4].startswith("nvcr.io/nvidia/k8s/dcgm-exporter:4.6.0-4.8.3")  # not needed for GPU-ready: last


def test_a_bad_image_reference_is_refused():
    with pytest.raises(ValueError, match="not an image reference"):
        prefetch.NodeImages(every_node=("a b",))


# --- in the program ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed() -> ProgramRun:
    return run_stack("mixed", monitoring="dcgm")


def deps(run: ProgramRun, name: str) -> set[str]:
    """The steps (commands) it waits for."""
    return dependency_names(run, name, types="command:")


def ancestors(run: ProgramRun, name: str) -> set[str]:
    seen: set[str] = set()
    todo = [name]
    while todo:
        for d in deps(run, todo.pop()) - seen:
            seen.add(d)
            todo.append(d)
    return seen


def test_every_node_pulls_after_the_runtime_and_not_after_the_driver(mixed):
    nodes = [r.name.removesuffix("-instance") for r in mixed.of_type("alicloud:ecs/instance:Instance")]
    assert nodes
    for node in nodes:
        step = f"{node}-bootstrap-prefetch-images"
        assert deps(mixed, step) == {f"{step}-copy", f"{node}-bootstrap-container-runtime"}
        assert not {a for a in ancestors(mixed, step) if "nvidia-driver" in a or "kube-packages" in a}
        # nothing waits for it: not the driver, not kubeadm
        assert not [r.name for r in mixed.resources if mixed.named(step).urn in r.dependencies]


def test_the_images_pulled_are_those_the_manifests_run(mixed):
    manifest_images = {
        prefetch.qualify(c["image"])
        for r in [*kinds(mixed, "DaemonSet"), *kinds(mixed, "Pod")]
        for spec in [r.inputs["spec"].get("template", {}).get("spec", r.inputs["spec"])]
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]
    }
    pulled = set()
    for r in mixed.resources:
        if r.name.endswith("-prefetch-images"):
            pulled |= set(env_of(r)["IMAGES"].split())
    prometheus = {i for i in manifest_images if "prometheus" in i}  # a Deployment, not per GPU node
    assert pulled == manifest_images - prometheus


def test_control_plane_pulls_kubeadm_images_from_the_init_repository(mixed):
    init = env_of(mixed.named("gpu-k8s-kubeadm-init"))
    cp = [r for r in mixed.resources if r.name.endswith("-prefetch-images") and "KUBEADM_IMAGE_REPOSITORY" in env_of(r)]
    assert len(cp) == 1
    env = env_of(cp[0])
    assert (env["KUBEADM_IMAGE_REPOSITORY"], env["KUBERNETES_VERSION"]) == (init["IMAGE_REPOSITORY"], init["KUBERNETES_VERSION"])


def test_a_dedicated_control_plane_pulls_flannel_and_kubeadm_only():
    run = run_stack("dev", controlPlaneInstanceType="ecs.g7.large")
    steps = {r.name.split("-bootstrap-")[0]: env_of(r) for r in run.resources if r.name.endswith("-prefetch-images")}
    cp = steps.pop("control-plane")
    assert cp["IMAGES"].split() == ["docker.io/flannel/flannel:v0.26.7", "docker.io/flannel/flannel-cni-plugin:v1.6.2-flannel1"]
    assert cp["KUBEADM_IMAGE_REPOSITORY"]
    gpu = [("KUBEADM_IMAGE_REPOSITORY" in env, "k8s-device-plugin" in env["IMAGES"]) for env in steps.values()]
    assert gpu == [(False, True)]


def test_the_image_list_is_a_trigger(mixed):
    step = next(r for r in mixed.resources if r.name.endswith("-prefetch-images"))
    triggers = " ".join(str(t) for t in reveal(step.inputs["triggers"]))
    for image in env_of(step)["IMAGES"].split():
        assert image in triggers


# --- the script, with stub commands ----------------------------------------------------------

# ctr: `images ls -q` lists $STUB_STATE/images; `images pull` adds one (ctr-fail-<n>: fail n times).
CTR = r"""
touch "$STUB_STATE/images"
if [[ "$3 $4" == "images ls" ]]; then cat "$STUB_STATE/images"; exit 0; fi
if [[ "$3 $4" == "images pull" ]]; then
  ref="${!#}"; f="$STUB_STATE/ctr-fail"
  n=0; [[ -e "$f" ]] && n=$(<"$f")
  if ((n > 0)); then echo $((n - 1)) >"$f"; echo "ctr: failed to resolve $ref" >&2; exit 1; fi
  echo "$ref" >>"$STUB_STATE/images"; echo "done: $ref"
fi
"""
IMAGES = "docker.io/flannel/flannel:v0.26.7 nvcr.io/nvidia/k8s-device-plugin:v0.20.0"


@pytest.fixture
def sb(tmp_path) -> StubBin:
    sb = StubBin(tmp_path)
    sb.add("ctr", body=CTR)
    sb.add("sleep")
    return sb


def test_pulls_each_image_once_with_the_mirrors(sb):
    first = sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES})
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    pulls = [c for c in sb.calls("ctr") if "pull" in c]
    assert [c[-1] for c in pulls] == IMAGES.split()
    assert all(c[1:6] == ["-n", "k8s.io", "images", "pull", "--hosts-dir"] for c in pulls)
    assert all(c[6] == f"{sb.root}/etc/containerd/certs.d" for c in pulls)
    sb.clear()
    second = sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES})
    assert second.returncode == 0
    assert not [c for c in sb.calls("ctr") if "pull" in c]
    assert second.stderr.count("already present, skipping") == 2


def test_a_failed_pull_is_retried_then_only_a_warning(sb):
    (sb.state / "ctr-fail").write_text("99")
    result = sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES, "PULL_TRIES": "2"})
    assert result.returncode == 0
    assert len([c for c in sb.calls("ctr") if "pull" in c]) == 4  # bounded: 2 tries each
    assert "WARNING: could not pull docker.io/flannel/flannel:v0.26.7" in result.stderr
    assert "2 pull(s) did not finish: not a failure" in result.stderr


def test_a_transient_failure_is_retried(sb):
    (sb.state / "ctr-fail").write_text("1")
    result = sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES})
    assert result.returncode == 0
    assert "every image is on the node" in result.stderr
    assert (sb.state / "images").read_text().split() == IMAGES.split()


def test_no_lock_and_no_apt(sb):
    sb.add("flock")
    sb.add("apt-get")
    assert sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES}).returncode == 0
    assert not sb.calls("flock") and not sb.calls("apt-get")


def test_the_step_deadline_stops_further_pulls(sb):
    result = sb.run(SCRIPT, {**FAST, "IMAGES": IMAGES, "STEP_DEADLINE": "0"})
    assert result.returncode == 0
    assert not [c for c in sb.calls("ctr") if "pull" in c]
    assert "step time limit (0s) reached" in result.stderr


def test_control_plane_pulls_kubeadm_images_through_the_cri(sb):
    sb.add("kubeadm")
    env = {**FAST, "IMAGES": "", "KUBEADM_IMAGE_REPOSITORY": "registry.k8s.io", "KUBERNETES_VERSION": "1.34.2"}
    assert sb.run(SCRIPT, env).returncode == 0
    assert sb.calls("kubeadm") == [
        [
            "kubeadm",
            *("config", "images", "pull", "--image-repository", "registry.k8s.io"),
            *("--kubernetes-version", "v1.34.2", "--cri-socket", "unix:///run/containerd/containerd.sock"),
        ]
    ]


def test_kubeadm_not_installed_in_time_is_a_warning(sb):
    env = {**FAST, "KUBEADM_IMAGE_REPOSITORY": "registry.k8s.io", "KUBERNETES_VERSION": "1.34.2", "KUBEADM_WAIT": "3"}
    result = sb.run(SCRIPT, env)
    assert result.returncode == 0
    assert "kubeadm not installed after 3s: kubeadm init pulls its images itself" in result.stderr


# --- the timing line every node step prints (lib/common.sh track_time) ------------------------

PROC_NET_DEV = "Inter-|   Receive\n face |bytes    packets\n    lo: {lo} 1 0\n  eth0:{eth0} 3 0\n"


def test_the_step_reports_its_time_and_the_bytes_received(sb):
    from components.kubeadm.timings import parse_timing

    dev = sb.root / "proc/net/dev"
    dev.parent.mkdir(parents=True)
    dev.write_text(PROC_NET_DEV.format(lo=100, eth0=1000))
    # each pull "receives" 250 MB on eth0 (and some loopback traffic, not counted)
    sb.add("ctr", body=CTR + f'[[ "$4" == pull ]] && printf "{PROC_NET_DEV.format(lo="%s", eth0="%s")}" 900 250001000 >{dev}')
    result = sb.run(SCRIPT, {**FAST, "IMAGES": "docker.io/x/y:1"})
    assert result.returncode == 0
    line = result.stderr.splitlines()[-1]
    assert line.startswith("[gpu-k8s 25-prefetch-images] TIMING seconds=")
    assert line.endswith(" rx_bytes=250000000")
    seconds, rx = parse_timing(result.stderr)
    assert 0 <= seconds < 30 and rx == 250_000_000


def test_a_failed_step_still_reports_and_keeps_its_exit_status(sb):
    from components.kubeadm.timings import parse_timing

    result = sb.run(SCRIPT, {**FAST, "KUBEADM_IMAGE_REPOSITORY": "registry.k8s.io"})
    assert result.returncode == 1
    assert parse_timing(result.stderr) is not None
    assert "rx_bytes=unknown" in result.stderr  # no /proc/net/dev under the test root


def test_kubeadm_images_come_first_once_kubeadm_is_installed(sb):
    sb.add("kubeadm")
    env = {**FAST, "IMAGES": IMAGES, "KUBEADM_IMAGE_REPOSITORY": "registry.k8s.io", "KUBERNETES_VERSION": "1.34.2"}
    assert sb.run(SCRIPT, env).returncode == 0
    order = [c[0] for c in sb.calls() if c[0] == "kubeadm" or "pull" in c]
    assert order == ["kubeadm", "ctr", "ctr"]
