"""Every input class README's "Bad input" table lists: refused (exit 2, a short message naming
the key) or warned (exit 0, a warning), through the plan CLI in-process, never a traceback."""

from __future__ import annotations

import json

import pytest

from components import config
from tools import plan

ACR = "registry.cn-hangzhou.aliyuncs.com/team"
POOL_OF_11 = json.dumps([{"name": "gpu", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 11}])

# (stack, --config overrides, the key the first line must name)
REFUSED = [
    # address plans that collide
    ("dev", ["podCidr=10.0.0.0/16"], "gpu-k8s:podCidr: '10.0.0.0/16'"),
    ("dev", ["podCidr=10.0.0.0/8"], "gpu-k8s:podCidr: '10.0.0.0/8'"),
    ("dev", ["podCidr=10.96.0.0/16"], "gpu-k8s:podCidr: '10.96.0.0/16'"),
    # versions that were never released
    ("dev", ["kubernetesVersion=1.34.99"], "gpu-k8s:kubernetesVersion: '1.34.99'"),
    ("dev", ["kubernetesVersion=1.28.16"], "gpu-k8s:kubernetesVersion: '1.28.16'"),
    ("dev", ["flannelVersion=v9.9.9"], "gpu-k8s:flannelVersion: 'v9.9.9'"),
    ("dev", ["flannelVersion=v0.26.99"], "gpu-k8s:flannelVersion: 'v0.26.99'"),
    ("dev", ["devicePluginVersion=v0.99.0"], "gpu-k8s:devicePluginVersion: 'v0.99.0'"),
    ("dev", ["containerToolkitVersion=1.99.99"], "gpu-k8s:containerToolkitVersion: '1.99.99'"),
    ("dev", ["installCudaToolkit=true", "cudaToolkitVersion=99.9"], "gpu-k8s:cudaToolkitVersion: '99.9'"),
    ("p4", ["driverVersion=999.99.99"], "gpu-k8s:driverVersion: '999.99.99'"),
    ("p4", ["driverVersion=535.999.99"], "gpu-k8s:driverVersion: '535.999.99'"),
    # download and mirror URLs (the GRID URL is a secret: never echoed)
    ("dev", ["gridDriverUrl=ftp://example.com/grid.run"], "gpu-k8s:gridDriverUrl: '[secret]'"),
    ("dev", ["gridDriverUrl=http://example.com/grid.run"], "gpu-k8s:gridDriverUrl: '[secret]'"),
    ("dev", ["gridDriverUrl=https://example.com/a b.run"], "gpu-k8s:gridDriverUrl: '[secret]'"),
    ("dev", ["gridDriverUrl=https://example.com/a'b.run"], "gpu-k8s:gridDriverUrl: '[secret]'"),
    ("dev", ["gridDriverUrl=grid.run"], "gpu-k8s:gridDriverUrl: '[secret]'"),
    ("dev", ['registryMirrors={"docker.io": "https://x;reboot"}'], "gpu-k8s:registryMirrors.docker.io: 'https://x;reboot'"),
    ("dev", ['registryMirrors={"docker.io": "https://a,https://b"}'], "gpu-k8s:registryMirrors.docker.io"),
    ("dev", ['registryMirrors={"docker.io": "https://x$(id)"}'], "gpu-k8s:registryMirrors.docker.io"),
    ("dev", ['registryMirrors={"docker.io": "https://x|y"}'], "gpu-k8s:registryMirrors.docker.io"),
    ("dev", ['registryMirrors={"docker.io": "https://x&y"}'], "gpu-k8s:registryMirrors.docker.io"),
    # cost
    ("dev", ["spot=true", "spotPriceLimit=0"], "gpu-k8s:spotPriceLimit: '0'"),
    # images the apt-based scripts cannot run
    ("dev", ["imageNameRegex=^centos_7"], "gpu-k8s:imageNameRegex: '^centos_7'"),
    ("dev", ["imageNameRegex=^aliyun_3_x64"], "gpu-k8s:imageNameRegex: '^aliyun_3_x64'"),
    ("dev", ["imageNameRegex=anolis"], "gpu-k8s:imageNameRegex: 'anolis'"),
    ("dev", ["imageNameRegex=^rockylinux_9"], "gpu-k8s:imageNameRegex: '^rockylinux_9'"),
    ("dev", ["imageNameRegex=_x64_"], "gpu-k8s:imageNameRegex: '_x64_'"),
    ("dev", ["imageNameRegex="], "gpu-k8s:imageNameRegex: ''"),
    # a control plane kubeadm refuses
    ("dev", ["controlPlaneInstanceType=ecs.t5-lc2m1.nano"], "gpu-k8s:controlPlaneInstanceType: 'ecs.t5-lc2m1.nano'"),
    ("dev", ["controlPlaneInstanceType=ecs.t6-c4m1.large"], "gpu-k8s:controlPlaneInstanceType: 'ecs.t6-c4m1.large'"),
    # the key that is wrong is the one named
    ("dev", ["smokeTestCudaVersion=12.4"], "gpu-k8s:smokeTestCudaVersion: '12.4'"),
    # issue 22: a copy keeps its tag's CUDA (a 12.5 image on a 12.2 driver without an exemption stays refused)
    ("p4", ["smokeTestImage=registry.cn-hangzhou.aliyuncs.com/team/cuda:12.5.0-base-ubuntu22.04"], "gpu-k8s:smokeTestImage"),
    ("dev", [f"smokeTestImage={ACR}/cuda-sample:vectoradd-cuda12.5.0"], "gpu-k8s:smokeTestImage"),
    ("p4", [f"smokeTestImage={ACR}/vecadd:cuda11.7", "smokeTestCudaVersion=11.2"], "gpu-k8s:smokeTestCudaVersion: '11.2'"),
    # drivers that cannot drive the GPU, GRID without an install path or with a claimed version
    ("p4", ["driverVersion=590.44.01"], "gpu-k8s:driverVersion: '590.44.01'"),
    ("dev", ["instanceType=ecs.gn6v-c8g1.2xlarge", "driverVersion=595.45.04"], "gpu-k8s:driverVersion: '595.45.04'"),
    ("dev", ["instanceType=ecs.gn8is.2xlarge", "driverVersion=470.256.02"], "gpu-k8s:driverVersion: '470.256.02'"),
    ("dev", ["instanceType=ecs.vgn5i-m1.large"], "gpu-k8s:instanceType: 'ecs.vgn5i-m1.large'"),
    ("mixed", ['nodePools=[{"name":"a","instanceType":"ecs.vgn5i-m2.xlarge","count":1}]'], "gpu-k8s:nodePools[0].instanceType"),
    ("dev", ["gridDriverVersion=535.183.06"], "gpu-k8s:gridDriverVersion: '535.183.06'"),
    # special-purpose pod ranges, a public image that is not Ubuntu, a port that is not one
    ("dev", ["podCidr=127.0.0.0/8"], "gpu-k8s:podCidr: '127.0.0.0/8'"),
    ("dev", ["podCidr=224.0.0.0/8"], "gpu-k8s:podCidr: '224.0.0.0/8'"),
    ("dev", ["podCidr=0.0.0.0/8"], "gpu-k8s:podCidr: '0.0.0.0/8'"),
    ("dev", ["imageId=centos_7_9_x64_20G_alibase_20240628.vhd"], "gpu-k8s:imageId: 'centos_7_9"),
    ("dev", ["imageId=win2022_21H2_x64_dtc_en-us_40G_alibase_20240628.vhd"], "gpu-k8s:imageId: 'win2022"),
    ("dev", ['registryMirrors={"docker.io": "https://m.example.com:99999"}'], "gpu-k8s:registryMirrors.docker.io"),
    ("dev", ["prometheusVersion=v99.0.0"], "gpu-k8s:prometheusVersion: 'v99.0.0'"),
    ("ack", ["ackClusterSpec=ack.standard", f"nodePools={POOL_OF_11}"], "gpu-k8s:ackClusterSpec: 'ack.standard'"),
    ("dev", ["smokeTest=tensorflow", "timeSlicingReplicas=48"], "gpu-k8s:timeSlicingReplicas: '48'"),
    # issues 24-25: MIG on GPUs without it, a bake that would never be used, keys of the GPU operations
    ("mixed", ["migStrategy=single"], "gpu-k8s:migStrategy: 'single'"),
    ("p4", ["nodeImage=bake", "imageId=m-bp1abcdef0123456789"], "gpu-k8s:nodeImage: 'bake'"),
    ("p4", ["nodeImage=baked"], "gpu-k8s:nodeImage: 'baked'"),
    ("ack", ["nodeImage=bake"], "gpu-k8s:nodeImage: 'bake'"),
    ("ack", ["gpuIsolation=false"], "gpu-k8s:gpuIsolation: 'false'"),
    ("dev", ["timeSlicingRenameByDefault=true"], "gpu-k8s:timeSlicingRenameByDefault: 'true'"),
    ("p4", ["prometheusRetention=0h"], "gpu-k8s:prometheusRetention: '0h'"),
    ("p4", ["prometheusRetention=forever"], "gpu-k8s:prometheusRetention: 'forever'"),
    ("p4", ["prometheusRetention=300y"], "gpu-k8s:prometheusRetention: '300y'"),
    ("ack", ["ackKubernetesVersion=1.99.0-aliyun.1"], "gpu-k8s:ackKubernetesVersion: '1.99.0-aliyun.1'"),
    ("p4", ['serviceMonitorLabels={"release": "kube_prom!"}'], "gpu-k8s:serviceMonitorLabels.release: 'kube_prom!'"),
]

# (stack, overrides, a fragment of the warning) - legal but risky: planned, loudly warned.
WARNED = [
    ("dev", ['allowedCidrs=["0.0.0.0/1", "128.0.0.0/1"]'], "together cover every address"),
    ("dev", ["kubernetesVersion=1.34.9"], "kubernetesVersion 1.34.9 is not in the known-releases table"),
    ("dev", ["flannelVersion=v0.29.0"], "flannelVersion v0.29.0 is not in the known-releases table"),
    ("p4", ["instanceType=ecs.gn6i-c4g1.xlarge", "driverVersion=595.91.07"], "driverVersion 595.91.07 is not in the"),
    ("dev", ["controlPlaneInstanceType=ecs.n4.small"], "its vCPU and memory are not in the catalog"),
    # issue 22: a name that does not look like the test is a warning, not a refusal
    ("p4", ["smokeTestImage=nvidia/cuda:11.4.3-base-ubuntu20.04"], "does not say it is a CUDA vectoradd sample"),
    ("dev", ['allowedCidrs=["0.0.0.0/1"]'], "50.0% of the internet"),
    ("dev", ['allowedCidrs=["1.0.0.0/8", "2.0.0.0/8", "3.0.0.0/8"]'], "more than a /8"),
    ("dev", ['allowedCidrs=["192.168.1.0/24", "127.0.0.1/32"]'], "loopback or private addresses"),
    ("dev", ["kubernetesMirror=upstream"], "kubernetesMirror upstream in cn-hangzhou"),
    ("dev", ["instanceType=ecs.gn9x-c8g1.2xlarge"], "GPU generation of family gn9x is not in the catalog"),
    ("dev", ["prometheusVersion=v3.16.0"], "prometheusVersion v3.16.0 is not in the known-releases table"),
    ("dev", ["smokeTest=tensorflow", "timeSlicingReplicas=4"], "timeSlicingReplicas 4"),
]

# Legitimate inputs (issue 22's false refusals among them): planned, exit 0. Inputs of different
# keys share a run (each would be refused on its own line if it were refused).
ACCEPTED = [
    ("p4", ["smokeTest=tensorflow", f"smokeTestImage={ACR}/gpu-check:11.2", "smokeTestCudaVersion=11.2", "zoneId=cn-hangzhou-h"]),
    ("dev", ["smokeTest=tensorflow", f"smokeTestImage={ACR}/tf-gpu:2.15", "smokeTestCudaVersion=11.2"]),
    (
        "p4",
        [f"smokeTestImage={ACR}/cuda-sample:vectoradd-cuda12.5.0", "driverVersion=580.95.05", "imageId=m-bp1abcdef0123456789"],
    ),
    ("p4", [f"smokeTestImage={ACR}/cuda-sample:vectoradd-cuda12.5.0", "smokeTestCudaVersion=12.5"]),
    ("ack", [f"smokeTestImage={ACR}/cuda-sample:vectoradd-cuda12.5.0", "zoneId=cn-hangzhou-k"]),
    ("p4", [f"smokeTestImage={ACR}/vecadd:cuda11.7", "smokeTestCudaVersion=11.7"]),
    ("p4", ["smokeTestImage=nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0@sha256:" + "a" * 64]),
    (
        "dev",
        [
            f"smokeTestImage={ACR}/cuda-sample:vectoradd-cuda11.2.1@sha256:" + "0" * 64,
            'registryMirrors={"_default": "https://abc.mirror.aliyuncs.com"}',
            "gridDriverVersion=470.256.03",
            "imageId=debian_12_6_x64_20G_alibase_20240628.vhd",
        ],
    ),
    ("dev", ["alicloud:region=cn-beijing", "zoneId=cn-beijing-h"]),
    ("dev", ["alicloud:region=ap-southeast-1", "zoneId=ap-southeast-1a"]),
    ("dev", ["instanceType=ecs.vgn5i-m1.large", "gridDriverUrl=https://example.com/grid.run", "gridDriverVersion=470.256.03"]),
    ("ack", ["ackClusterSpec=ack.standard", f"nodePools={POOL_OF_11.replace('11', '10')}"]),
    ("dev", ["alicloud:region=cn-hongkong", "kubernetesMirror=upstream"]),
]


def _argv(stack: str, overrides: list[str]) -> list[str]:
    """A JSON list for the array key allowedCidrs goes in as the CLI takes it (--path entries)."""
    argv = ["--stack", stack]
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "allowedCidrs" and value.startswith("["):
            for i, item in enumerate(json.loads(value)):
                argv += ["--config-path", f"{key}[{i}]={item}"]
        else:
            argv += ["--config", o]
    return argv


@pytest.mark.parametrize("stack,overrides,start", REFUSED)
def test_refused_cleanly(capsys, stack, overrides, start):
    code = plan.main(_argv(stack, overrides))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.rstrip("\n").split("\n")
    assert lines[0].startswith("gpu-k8s plan: config error: " + start), err
    assert "expected" in lines[0]
    assert all(line.startswith("  ") for line in lines[1:]) and max(map(len, lines)) <= 200, err
    assert len(lines) <= 5, err
    assert "Traceback" not in err


@pytest.mark.parametrize("stack,overrides", ACCEPTED)
def test_legitimate_inputs_planned(capsys, stack, overrides):
    code = plan.main(_argv(stack, overrides))
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "does not say it is" not in out  # a declared CUDA (or a telling name) is believed


@pytest.mark.parametrize("stack,overrides,fragment", WARNED)
def test_warned_but_planned(capsys, stack, overrides, fragment):
    code = plan.main(_argv(stack, overrides))
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = out.split("\nWarnings:\n", 1)[1].split("\n\n", 1)[0]
    assert fragment in warnings


@pytest.mark.parametrize(
    ("stack", "url"),
    [
        ("dev", "ftp://user:token@example.com/grid.run"),
        ("dev", "token:example.com/grid.run"),  # what stands before a colon is no scheme
        ("ack", "https://example.com/grid.run?token=1"),  # refused on ACK as a kubeadm-only key
    ],
)
def test_grid_url_is_never_echoed(capsys, stack, url):
    assert plan.main(_argv(stack, [f"gridDriverUrl={url}"])) == 2
    _, err = capsys.readouterr()
    assert "token" not in err and "example.com" not in err and "gridDriverUrl: '[secret]'" in err


@pytest.mark.parametrize(
    "overrides",
    [
        ["gridDriverUrl=https://example.com/nvidia/NVIDIA-Linux-x86_64-470.256.03-grid.run?X-Token=abc&exp=1"],
        ['registryMirrors={"docker.io": "https://abc123.mirror.aliyuncs.com", "nvcr.io": "https://nvcr.example.com:5000/v2"}'],
        ["podCidr=10.128.0.0/16", "imageNameRegex=^ubuntu_24_04_x64_20G_alibase_", "spot=true", "spotPriceLimit=0.5"],
        ["controlPlaneInstanceType=ecs.g7.large"],
        ["kubernetesVersion=1.35.4", "flannelVersion=v0.28.9", "devicePluginVersion=v0.14.3", "containerToolkitVersion=1.17.8"],
        ['allowedCidrs=["203.0.113.0/24", "198.51.100.7/32"]'],
    ],
)
def test_good_neighbours_still_accepted_without_warning(capsys, overrides):
    code = plan.main(_argv("dev", overrides))
    out, err = capsys.readouterr()
    assert code == 0, err
    warnings = out.split("\nWarnings:\n", 1)[1].split("\n\n", 1)[0] if "\nWarnings:\n" in out else ""
    for fragment in ("known-releases table", "cover every address", "not in the catalog"):
        assert fragment not in warnings


def test_an_encrypted_grid_url_in_the_stack_file_is_not_checked_offline(capsys, tmp_path, monkeypatch):
    """The offline plan cannot decrypt `secure:` values; only the deployed stack checks them."""
    from tools import harness

    (tmp_path / "stacks").mkdir()
    (tmp_path / "Pulumi.yaml").write_text((harness.ROOT / "Pulumi.yaml").read_text())
    (tmp_path / "__main__.py").symlink_to(harness.ROOT / "__main__.py")
    (tmp_path / "stacks" / "Pulumi.sec.yaml").write_text(
        "config:\n  alicloud:region: cn-hangzhou\n  gpu-k8s:instanceType: ecs.sgn7i-vws-m2s.xlarge\n"
        "  gpu-k8s:gridDriverUrl:\n    secure: v1:AAAA\n"
    )
    monkeypatch.setattr(harness, "ROOT", tmp_path)
    assert harness.effective_config("sec")["gpu-k8s:gridDriverUrl"] == config.kubeadm.OFFLINE_SECRET_MARKER
    code, _, err = plan.main(["--stack", "sec"]), *capsys.readouterr()
    assert code == 0, err
