"""Render every Kubernetes object of a program run as YAML files, and validate them.

``render_manifests(run)`` turns the recorded inputs of each ``kubernetes:*`` resource
(camelCase, apiVersion/kind filled in by the SDK) into one YAML file per object, numbered
so that ``kubectl apply -f DIR/manifests`` creates them in a working order (namespaces
first, workloads last). Secrets show as "[secret]". ``validate_manifests`` checks every
object against the Kubernetes OpenAPI schema of the cluster's minor version in strict
mode (unknown fields are errors), with kubernetes-validate.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from tools.harness import ProgramRun, Resource, redact

DIR = "manifests"
# Creation order, after Helm's install order: what others refer to comes first.
KIND_ORDER = (
    "Namespace",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Node",
    "Service",
    "DaemonSet",
    "Deployment",
    "StatefulSet",
    "Job",
    "CronJob",
    "Pod",
)
_KEY_ORDER = ("apiVersion", "kind", "metadata")
# Pulumi-only resources that are not Kubernetes objects (providers, yaml/helm wrappers).
_NOT_OBJECTS = re.compile(r"^(pulumi:providers:|kubernetes:(yaml|helm\.sh|kustomize)[:/])")


def is_kubernetes_object(resource: Resource) -> bool:
    return resource.custom and resource.type.startswith("kubernetes:") and not _NOT_OBJECTS.match(resource.type)


def _is_patch(resource: Resource) -> bool:
    return resource.type.endswith("Patch")


def _canonical(value: object) -> object:
    """Keys sorted, "name" first: recorded inputs come back in no stable order."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (k != "name", k))
        return {k: _canonical(value[k]) for k in keys}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def manifest_object(resource: Resource) -> dict:
    """The object as kubectl would get it: recorded inputs, secrets redacted, keys ordered."""
    body = redact(resource.inputs)
    if not isinstance(body, dict) or "apiVersion" not in body or "kind" not in body:
        raise ValueError(f"{resource.type} {resource.name}: recorded inputs carry no apiVersion/kind")
    body = dict(_canonical(body))  # type: ignore[arg-type]
    metadata = dict(body.get("metadata") or {})
    # Pulumi auto-names objects without a name (name + random suffix); show the stem.
    metadata.setdefault("name", resource.name)
    body["metadata"] = _canonical(metadata)
    return {**{k: body[k] for k in _KEY_ORDER if k in body}, **{k: v for k, v in body.items() if k not in _KEY_ORDER}}


def _order(obj: dict) -> tuple[int, str, str]:
    kind = obj["kind"]
    rank = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    return rank, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (scripts, JSON config) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def render_manifests(run: ProgramRun) -> dict[str, str]:
    """Relative path -> YAML text for every Kubernetes object in the run, in apply order."""
    items = [(manifest_object(r), r) for r in run.resources if is_kubernetes_object(r)]
    items.sort(key=lambda item: _order(item[0]))
    width = max(2, len(str(len(items))))
    rendered: dict[str, str] = {}
    for index, (obj, resource) in enumerate(items):
        header = f"# {resource.type} {resource.name}\n"
        if _is_patch(resource):
            header += "# A patch of an existing object: apply with `kubectl apply --server-side`.\n"
        path = f"{DIR}/{index:0{width}d}-{obj['kind'].lower()}-{resource.name}.yaml"
        rendered[path] = header + yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return rendered


def schema_version(kubernetes_version: str) -> str:
    """The kubernetes-validate schema for the cluster's minor (newest bundled if newer)."""
    minor = ".".join(kubernetes_version.lstrip("v").split(".")[:2])
    bundled = kubernetes_validate.utils.all_versions()
    fitting = [v for v in bundled if tuple(map(int, v.split(".")[:2])) <= tuple(map(int, minor.split(".")))]
    if not fitting:
        raise ValueError(f"kubernetes-validate has no schema for {kubernetes_version} (oldest: {bundled[0]})")
    exact = [v for v in fitting if v.startswith(minor + ".")]
    return (exact or fitting)[-1]


# Custom resources the program creates: their CRD's openAPIV3Schema, vendored (each file
# names its source), checked as strictly as built-in kinds.
SCHEMAS_DIR = Path(__file__).parent / "schemas"
CUSTOM_RESOURCE_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
}


def _strict(schema: object) -> object:
    """Unknown fields are errors, as kubernetes-validate's strict mode does for built-ins."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {k: _strict(v) for k, v in schema.items()}
    if "properties" in strict and "additionalProperties" not in strict and not strict.get("x-kubernetes-preserve-unknown-fields"):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def custom_resource_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator | None:
    name = CUSTOM_RESOURCE_SCHEMAS.get((api_version, kind))
    if name is None:
        return None
    return jsonschema.Draft7Validator(_strict(json.loads((SCHEMAS_DIR / name).read_text())["schema"]))


def validate_manifests(manifests: dict[str, str], kubernetes_version: str) -> list[str]:
    """Strict schema errors, one line per object ("path: error"); empty when all are valid."""
    version = schema_version(kubernetes_version)
    errors: list[str] = []
    for path, text in manifests.items():
        obj = yaml.safe_load(text)
        custom = custom_resource_validator(str(obj.get("apiVersion")), str(obj.get("kind")))
        if custom is not None:
            for err in sorted(custom.iter_errors(obj), key=lambda e: list(e.absolute_path)):
                where = "/".join(str(p) for p in err.absolute_path) or "(root)"
                errors.append(f"{path}: {where}: {err.message}")
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            errors.append(f"{path}: {where}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{path}: no {obj.get('apiVersion')}/{obj.get('kind')} schema for Kubernetes {version}")
    return errors
