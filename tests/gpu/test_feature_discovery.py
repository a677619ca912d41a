"""GPU Feature Discovery and NFD's master: the device plugin chart's GFD, NFD v0.19.0's CRDs and master."""

from __future__ import annotations

import hashlib

from helpers import kinds, run_stack, shipped

from components.gpu import feature_discovery as fd


def _named(run, kind: str, name: str):
    (found,) = [r for r in kinds(run, kind) if r.inputs["metadata"]["name"] == name]
    return found.inputs


def test_nfd_crds_are_upstreams_byte_for_byte():
    assert hashlib.sha256(fd.CRDS_FILE.read_bytes()).hexdigest() == fd.CRDS_SHA256
    assert [c["metadata"]["name"] for c in fd.nfd_crds()] == [
        "nodefeatures.nfd.k8s-sigs.io",
        "nodefeaturegroups.nfd.k8s-sigs.io",
        "nodefeaturerules.nfd.k8s-sigs.io",
    ]


def test_gfd_reads_the_plugins_config_and_writes_node_features():
    run = shipped("dev")
    gfd = _named(run, "DaemonSet", "gpu-feature-discovery")
    pod = gfd["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "nvcr.io/nvidia/k8s-device-plugin:v0.20.0" and container["command"] == ["gpu-feature-discovery"]
    env = {e["name"]: e.get("value") or e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    # The NodeFeature API needs its node and namespace (internal/lm/output.go); the pod owns the object.
    assert env["NODE_NAME"] == "spec.nodeName" and env["NAMESPACE"] == "metadata.namespace"
    assert env["POD_NAME"] == "metadata.name" and env["CONFIG_FILE"] == "/etc/nvidia-device-plugin/config.yaml"
    assert container["securityContext"] == {"privileged": True}
    assert {v["name"]: v.get("configMap", {}).get("name") for v in pod["volumes"]}["plugin-config"] == (
        "nvidia-device-plugin-config"
    )
    role = _named(run, "ClusterRole", "gpu-feature-discovery")
    assert {
        "apiGroups": ["nfd.k8s-sigs.io"],
        "resources": ["nodefeatures"],
        "verbs": ["get", "list", "watch", "create", "update"],
    } in (role["rules"])


def test_nfd_master_applies_the_labels():
    run = shipped("mixed")
    master = _named(run, "Deployment", "nfd-master")
    (container,) = master["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.k8s.io/nfd/node-feature-discovery:v0.19.0"
    assert container["command"] == ["nfd-master"] and master["metadata"]["namespace"] == "node-feature-discovery"
    assert {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get", "patch", "update", "list"]} in (
        _named(run, "ClusterRole", "nfd-master")["rules"]
    )


def test_no_feature_discovery_on_ack_or_an_old_plugin():
    assert not [r for r in kinds(shipped("ack"), "DaemonSet") if r.inputs["metadata"]["name"] == "gpu-feature-discovery"]
    assert not kinds(run_stack("dev", devicePluginVersion="v0.17.4"), "CustomResourceDefinition")
