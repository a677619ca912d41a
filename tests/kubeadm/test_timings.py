"""The `timings` output: the TIMING line parser, the critical path, placeholders offline, the program's output."""

from __future__ import annotations

import pytest
from helpers import shipped

from components.kubeadm.timings import PLACEHOLDER_CRITICAL, PLACEHOLDER_SECONDS, TimedStep, critical_path, parse_timing, report
from tools.harness import reveal


@pytest.mark.parametrize(
    ("stderr", "parsed"),
    [
        (
            "[gpu-k8s 20-container-runtime] installing\n[gpu-k8s 20-container-runtime] TIMING seconds=81.4 rx_bytes=73400320\n",
            (81.4, 73400320),
        ),
        ("[gpu-k8s 00-wait-boot] TIMING seconds=3.0 rx_bytes=unknown", (3.0, None)),
        ("[gpu-k8s 30-kube-packages] TIMING seconds=12.5 rx_bytes=-5", (12.5, None)),  # counter reset
        ("[gpu-k8s x] TIMING seconds=1.0 rx_bytes=1\n[gpu-k8s x] TIMING seconds=2.0 rx_bytes=2\n", (2.0, 2)),  # the last
        ("", None),
        (None, None),
        ("echo TIMING seconds=1 rx_bytes=1", None),  # not a step's line
    ],
)
def test_parse_timing(stderr, parsed):
    assert parse_timing(stderr) == parsed


STEPS = [
    TimedStep("a-wait", "a", "wait-boot"),
    TimedStep("a-driver", "a", "nvidia-driver", ("a-wait",)),
    TimedStep("a-runtime", "a", "container-runtime", ("a-wait",)),
    TimedStep("a-prefetch", "a", "prefetch-images", ("a-runtime",)),
    TimedStep("init", "a", "kubeadm-init", ("a-runtime",)),
]


def line(seconds, rx=0):
    return f"[gpu-k8s s] TIMING seconds={seconds} rx_bytes={rx}\n"


def test_critical_path_follows_the_longest_chain():
    assert critical_path(STEPS, {"a-wait": 10, "a-driver": 300, "a-runtime": 60, "a-prefetch": 200, "init": 50}) == [
        "a-wait",
        "a-driver",
    ]
    assert critical_path(STEPS, {"a-wait": 10, "a-driver": 100, "a-runtime": 60, "a-prefetch": 200, "init": 50}) == [
        "a-wait",
        "a-runtime",
        "a-prefetch",
    ]


def test_report_marks_the_critical_path_in_run_order():
    out = report(STEPS, [line(10), line(300, 500), line(60), line(200), line(50)], gpu_nodes=["a"])
    steps = out["nodes"]["a"]["steps"]
    assert [s["step"] for s in steps] == ["wait-boot", "nvidia-driver", "container-runtime", "prefetch-images", "kubeadm-init"]
    assert [s["critical"] for s in steps] == [True, True, False, False, False]
    assert steps[1]["rxBytes"] == 500
    assert out["criticalSeconds"] == 310.0
    assert out["nodes"]["a"]["mayReboot"] is True


def test_offline_every_measured_value_is_a_placeholder():
    out = report(STEPS, [""] * len(STEPS))
    assert out["criticalPath"] == PLACEHOLDER_CRITICAL
    assert all(s["seconds"] == PLACEHOLDER_SECONDS for s in out["nodes"]["a"]["steps"])
    assert out["mayReboot"].startswith("none:")


def test_the_program_exports_timings_for_every_node_in_run_order():
    run = shipped("mixed")
    out = reveal(run.outputs["timings"])
    hosts = [r.name.removesuffix("-instance") for r in run.of_type("alicloud:ecs/instance:Instance")]
    assert set(out["nodes"]) == set(hosts)
    cp = out["nodes"]["train-0"]["steps"]
    roles = [s["step"] for s in cp]
    assert roles[:3] == ["wait-boot", "driver-prepare", "settle"]
    assert roles.index("container-runtime") < roles.index("prefetch-images") < roles.index("kubeadm-init")
    assert roles[-1] == "kubeadm-init"
    assert out["nodes"]["infer-0"]["steps"][-1]["step"] == "kubeadm-join"
    assert all(n["mayReboot"] for n in out["nodes"].values())  # every node here has a GPU
    assert out["criticalPath"] == PLACEHOLDER_CRITICAL  # offline: nothing measured
    assert all(s["seconds"] == PLACEHOLDER_SECONDS for s in cp)  # settle too: it follows prepare's measurement


def test_settle_is_timed_from_prepare_once_prepare_was_measured():
    from components.kubeadm.bootstrap import REBOOT_SETTLE_SECONDS, _settle_timing

    measured = "[gpu-k8s 10-driver-prepare] TIMING seconds=7.0 rx_bytes=100\n"
    assert _settle_timing("", "") is None and _settle_timing("reboot\n", None) is None  # offline
    assert _settle_timing("reboot\n", measured) == f"[gpu-k8s settle] TIMING seconds={REBOOT_SETTLE_SECONDS} rx_bytes=unknown"
    assert _settle_timing("ok\n", measured) == "[gpu-k8s settle] TIMING seconds=0 rx_bytes=unknown"
