"""Flannel: upstream kube-flannel.yml as typed resources, pod CIDR wired into net-conf."""

from __future__ import annotations

import json

import pytest
from helpers import kinds, run_stack

from components.kubeadm.cni import FlannelArgs


@pytest.fixture(scope="module")
def run():
    return run_stack("dev", podCidr="10.200.0.0/16")


def _one(run, kind):
    (resource,) = [r for r in kinds(run, kind) if r.name.startswith("gpu-k8s-cni-")]
    return resource


def test_namespace_admits_privileged_pods(run):
    ns = _one(run, "Namespace").inputs["metadata"]
    assert ns["name"] == "kube-flannel"
    assert ns["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_net_conf_carries_the_pod_cidr_and_vxlan(run):
    data = _one(run, "ConfigMap").inputs["data"]
    net = json.loads(data["net-conf.json"])
    assert net["Network"] == "10.200.0.0/16" and net["Backend"] == {"Type": "vxlan"}
    cni = json.loads(data["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]


def test_daemonset_matches_upstream(run):
    ds = _one(run, "DaemonSet").inputs
    assert (ds["metadata"]["name"], ds["metadata"]["namespace"]) == ("kube-flannel-ds", "kube-flannel")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["priorityClassName"] == "system-node-critical"
    assert pod["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"}]
    assert pod["serviceAccountName"] == "flannel"
    init = {c["name"]: c for c in pod["initContainers"]}
    assert list(init) == ["install-cni-plugin", "install-cni"]
    # upstream kube-flannel.yml at v0.26.7 (flannel-io/flannel, Documentation/kube-flannel.yml)
    assert init["install-cni-plugin"]["image"] == "docker.io/flannel/flannel-cni-plugin:v1.6.2-flannel1"
    assert init["install-cni"]["image"] == "docker.io/flannel/flannel:v0.26.7"
    assert init["install-cni"]["args"][-1] == "/etc/cni/net.d/10-flannel.conflist"
    (main,) = pod["containers"]
    assert main["name"] == "kube-flannel" and main["args"] == ["--ip-masq", "--kube-subnet-mgr"]
    assert set(main["securityContext"]["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    volumes = {v["name"] for v in pod["volumes"]}
    mounted = {m["name"] for c in [*pod["initContainers"], main] for m in c["volumeMounts"]}
    assert volumes == mounted == {"run", "cni-plugin", "cni", "flannel-cfg", "xtables-lock"}


def test_rbac_binds_the_service_account(run):
    binding = _one(run, "ClusterRoleBinding").inputs
    sa = _one(run, "ServiceAccount").inputs["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}]
    assert binding["roleRef"]["name"] == _one(run, "ClusterRole").inputs["metadata"]["name"]


def test_namespaced_objects_wait_for_the_namespace(run):
    ns, sa, cm, ds = (_one(run, kind) for kind in ("Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"))
    for resource in (sa, cm, ds):
        assert resource.inputs["metadata"]["namespace"] == "kube-flannel"
    assert ns.urn in sa.dependencies and ns.urn in cm.dependencies
    assert cm.urn in ds.dependencies and _one(run, "ClusterRoleBinding").urn in ds.dependencies


def test_versions_are_arguments():
    run = run_stack("dev", flannelVersion="v0.25.6")
    images = {c["image"] for c in [*_one(run, "DaemonSet").inputs["spec"]["template"]["spec"]["initContainers"]]}
    assert "docker.io/flannel/flannel:v0.25.6" in images
    assert FlannelArgs(pod_cidr="10.244.0.0/16", flannel_version="v0.26.7", cni_plugin_version="v1.6.2-flannel1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pod_cidr": "10.244.0.1/16"}, "pod_cidr"),
        ({"pod_cidr": "fd00::/64"}, "IPv4"),
        ({"flannel_version": "latest"}, "flannel_version"),
        ({"cni_plugin_version": "v1.7.1-flannel1:latest"}, "cni_plugin_version"),
    ],
)
def test_args_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FlannelArgs(**{"pod_cidr": "10.244.0.0/16", "flannel_version": "v0.26.7", **kwargs})
