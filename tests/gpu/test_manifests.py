"""Rendered manifests: every Kubernetes object, apply order, strict schema validation."""

from __future__ import annotations

import pytest
import yaml
from helpers import run_stack

from tools import manifests
from tools.harness import SECRET_SIG, SECRET_VALUE, Resource
from tools.manifests import is_kubernetes_object, render_manifests, schema_version, validate_manifests

BUILT_IN_NAMESPACES = {"default", "kube-system"}
CASES = [
    ("dev", {}),
    ("p4", {"devicePluginVersion": "v0.14.3", "smokeTest": "tensorflow"}),
    ("mixed", {"timeSlicingReplicas": 2, "timeSlicingRenameByDefault": True}),
    ("ack", {"nodePools": [{"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2}]}),
]


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def rendered(request):
    stack, overrides = request.param
    run = run_stack(stack, **overrides)
    return run, render_manifests(run)


def test_every_kubernetes_object_is_rendered_once(rendered):
    run, files = rendered
    objects = [r for r in run.resources if is_kubernetes_object(r)]
    assert len(files) == len(objects) > 0
    assert all(path.startswith("manifests/") and path.endswith(".yaml") for path in files)
    assert not any(r.type.startswith("pulumi:providers:") for r in objects)


def test_every_object_passes_strict_schema_validation(rendered):
    run, files = rendered
    assert validate_manifests(files, run.config["gpu-k8s:kubernetesVersion"]) == []


def test_files_apply_in_order(rendered):
    """kubectl apply -f DIR/manifests goes by file name: namespaces and config before users."""
    _, files = rendered
    created: set[tuple[str, str]] = set()
    for path in sorted(files):
        obj = yaml.safe_load(files[path])
        meta, spec = obj["metadata"], obj.get("spec", {})
        if "namespace" in meta:
            assert meta["namespace"] in BUILT_IN_NAMESPACES or ("Namespace", meta["namespace"]) in created, path
        template = spec.get("template", {}).get("spec", spec)
        for volume in template.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in created, path
        created.add((obj["kind"], meta["name"]))


def test_output_is_deterministic():
    first, second = (render_manifests(run_stack("mixed")) for _ in range(2))
    assert first == second


def test_secrets_are_redacted():
    secret = {SECRET_SIG: SECRET_VALUE, "value": "hunter2"}
    resource = Resource(
        urn="urn:pulumi:test::gpu-k8s::kubernetes:core/v1:Secret::s",
        type="kubernetes:core/v1:Secret",
        name="s",
        parent="",
        provider="",
        dependencies=[],
        inputs={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "default"},
            "stringData": {"k": secret},
        },
        outputs={},
        custom=True,
    )
    text = manifests.render_manifests(type("Run", (), {"resources": [resource]})())["manifests/00-secret-s.yaml"]
    assert "hunter2" not in text and "[secret]" in text


def test_strict_validation_catches_an_unknown_field():
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}
    assert validate_manifests({"ok.yaml": yaml.safe_dump(pod)}, "1.34.2") == []
    typo = {**pod, "spec": {**pod["spec"], "restartPolicyy": "Never"}}  # valid only without strict
    (error,) = validate_manifests({"manifests/00-pod.yaml": yaml.safe_dump(typo)}, "1.34.2")
    assert error.startswith("manifests/00-pod.yaml: spec:") and "restartPolicyy" in error
    wrong_kind = {"x.yaml": yaml.safe_dump({"apiVersion": "v9", "kind": "Gadget", "metadata": {"name": "g"}})}
    assert "no v9/Gadget schema" in validate_manifests(wrong_kind, "1.34.2")[0]


def test_schema_version_follows_the_cluster_minor():
    assert schema_version("1.34.2") == "1.34.0"
    assert schema_version("v1.28.15") == "1.28.0"
    assert schema_version("1.99.0") == manifests.kubernetes_validate.utils.latest_version()
    with pytest.raises(ValueError, match="no schema"):
        schema_version("1.10.0")


def test_service_monitor_is_checked_strictly_against_its_crd():
    from components.gpu import monitoring

    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": "m", "namespace": "gpu-metrics"},
        "spec": monitoring.service_monitor_spec(),
    }
    assert validate_manifests({"sm.yaml": yaml.safe_dump(obj)}, "1.34.2") == []
    obj["spec"]["endpoints"][0]["intervall"] = "15s"  # a typo the CRD's schema must catch
    obj["spec"]["endpoints"][0]["interval"] = "15 seconds"
    errors = validate_manifests({"sm.yaml": yaml.safe_dump(obj)}, "1.34.2")
    assert len(errors) == 2 and all(e.startswith("sm.yaml: spec/endpoints/0") for e in errors)
    assert "intervall" in " ".join(errors)
