"""Offline plan: what `pulumi up -s <stack>` would create, without a cloud account.

    python -m tools.plan --stack dev [--config KEY=VALUE ...] [--json] [--out DIR]
    python -m tools.plan --json > before.json
    python -m tools.plan --assume image=m-new --diff before.json [--json]

It evaluates the real __main__.py under the project's mocks with the stack's real
config (Pulumi.yaml defaults < stacks/Pulumi.<stack>.yaml < --config). Values only the
cloud knows are placeholders, listed in a legend. A config error exits 2 with one line.
``--config KEY=VALUE`` stores VALUE as plain text, as ``pulumi config set`` does;
``--config-path 'KEY[0]=VALUE'`` builds a list or map, as ``pulumi config set --path``.
``--diff`` plays a second `pulumi up` against a plan saved with ``--json`` (tools/engine.py);
``--assume`` sets what the mock cloud answers then. If `pulumi up` would fail (a failing
GPU test), the plan says why and exits 3. ``--out DIR`` writes plan.json, the scripts and the
manifests, and lists them in DIR/.gpu-k8s-plan-files: the next --out removes only the files
on that list, and refuses to write over any other file.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import shlex
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pulumi
import yaml

from tools import engine, harness
from tools.harness import ProgramRun, canonical, redact, run_program
from tools.mocks import PlaceholderMocks

# Inputs worth a glance in the text tree, per resource type (others: none shown).
KEY_INPUTS = {
    "alicloud:vpc/network:Network": ["cidrBlock"],
    "alicloud:vpc/switch:Switch": ["zoneId", "cidrBlock"],
    "alicloud:ecs/securityGroup:SecurityGroup": ["innerAccessPolicy"],
    "alicloud:ecs/securityGroupRule:SecurityGroupRule": ["portRange", "cidrIp"],
    "alicloud:ecs/instance:Instance": [
        "instanceType",
        "instanceChargeType",
        "spotStrategy",
        "autoReleaseTime",
        "systemDiskCategory",
        "systemDiskSize",
        "internetMaxBandwidthOut",
    ],
    "alicloud:ecs/ecsKeyPair:EcsKeyPair": ["keyPairName"],
    "tls:index/privateKey:PrivateKey": ["algorithm", "rsaBits"],
    "command:remote:Command": ["create"],
    "command:remote:CopyToRemote": ["remotePath"],
    "command:local:Command": ["create", "triggers"],
    "random:index/randomString:RandomString": ["length"],
    "kubernetes:apps/v1:DaemonSet": ["metadata"],
    "kubernetes:core/v1:Pod": ["metadata"],
}


# Outputs that only a deployed stack can really answer: the plan shows the mock's value.
DEPLOY_TIME_OUTPUTS = {
    "gpuTest": "placeholder: the verdict comes from the GPU test pod at deploy time",
    "gpuNodes": "placeholder: GPU, driver, allocatable and test come from the nodes at deploy time",
    "autoReleaseTime": "now + ttlHours, fixed when first deployed",
    "timings": "placeholder: each step's seconds and bytes are measured on the nodes at deploy time",
}


# Offline, no GPU test ran and no node reported: every such field is a labelled placeholder
# in the text and the JSON, never a value that looks like a result (e.g. "PASSED").
PLACEHOLDER_VERDICT = "<placeholder: PASSED or FAILED, from the GPU test pods at deploy time>"
PLACEHOLDER_PHASE = "<placeholder: pod phase at deploy time>"
PLACEHOLDER_PASSED = "<placeholder: true or false at deploy time>"
PLACEHOLDER_DIAGNOSIS = "<placeholder: diagnosis of a failed pod at deploy time>"
PLACEHOLDER_TEST = "<placeholder: the node's test result at deploy time>"


def _gpu_name_placeholder(expected: object) -> str:
    return f"<placeholder: nvidia-smi's GPU name at deploy time; the catalog expects {expected}>"


def _driver_placeholder(expected: object) -> str:
    return f"<placeholder: driver nvidia-smi reports at deploy time; configured {expected}>"


def _allocatable_placeholder(expected: object) -> str:
    return f"<placeholder: nvidia.com/gpu allocatable at deploy time; at least {expected} expected>"


def offline_outputs(outputs: dict) -> tuple[dict, dict[str, str]]:
    """The stack outputs with every deploy-time result replaced by a labelled placeholder."""
    shown = json.loads(json.dumps(redact(outputs), default=str))
    legend: dict[str, str] = {}
    test = shown.get("gpuTest")
    if isinstance(test, dict) and test.get("verdict") != "SKIPPED":
        test["verdict"] = PLACEHOLDER_VERDICT
        legend[PLACEHOLDER_VERDICT] = "gpuTest.verdict: no GPU test runs offline"
        for pod in test.get("pods") or []:
            if isinstance(pod, dict):
                pod.update(phase=PLACEHOLDER_PHASE, passed=PLACEHOLDER_PASSED, diagnosis=PLACEHOLDER_DIAGNOSIS)
        legend[PLACEHOLDER_PHASE] = legend[PLACEHOLDER_PASSED] = "gpuTest.pods[]: read from the cluster at deploy time"
        legend[PLACEHOLDER_DIAGNOSIS] = "gpuTest.pods[].diagnosis: why a pod failed, at deploy time"
    for row in shown.get("gpuNodes") or []:
        if not isinstance(row, dict):
            continue
        expected = str(row.get("gpu", "")).endswith("(expected)")  # ACK: the catalog's, already labelled
        if not expected:
            row["gpu"] = _gpu_name_placeholder(row.get("gpu"))
            row["driver"] = _driver_placeholder(row.get("driver"))
        row["allocatableGpus"] = _allocatable_placeholder(row.get("allocatableGpus"))
        if row.get("test") != "SKIPPED":
            row["test"] = PLACEHOLDER_TEST
        legend["<placeholder: ...> in gpuNodes"] = (
            "allocatable GPUs and test come from the cluster at deploy time"
            if expected
            else "GPU name, driver, allocatable GPUs and test come from each node at deploy time"
        )
    return shown, legend


class PlanError(Exception):
    """A user mistake: printed as one line, exit 2."""


def parse_override(text: str) -> tuple[str, object]:
    """``pulumi config set KEY VALUE``: VALUE is stored as plain text, even '["a"]' (no JSON)."""
    if "=" not in text:
        raise PlanError(f"--config {text!r}: expected KEY=VALUE, e.g. gpu-k8s:instanceType=ecs.gn6i-c4g1.xlarge")
    key, raw = text.split("=", 1)
    key = key.strip()
    if ":" not in key:
        key = f"gpu-k8s:{key}"
    return key, raw


_PATH_SEGMENT = re.compile(r'\.(?P<name>[A-Za-z_][\w-]*)|\[(?P<index>\d+)\]|\["(?P<quoted>[^"]+)"\]')


def _path_value(raw: str) -> object:
    """How `config set --path` stores a value inside an object (config/map.go adjustObjectValue)."""
    if raw in ("true", "false"):
        return raw == "true"
    if not (len(raw) > 1 and raw[0] == "0") and re.fullmatch(r"[+-]?[0-9]+", raw):
        return int(raw)
    return raw


def _stored_object(stack: str, key: str) -> object:
    """The stack file's list or map under ``key`` (a copy), which `config set --path` edits; else None."""
    try:
        value = harness.stack_config(stack).get(key)
    except (OSError, ValueError, yaml.YAMLError):
        return None  # plan() reports the stack file's problem
    if isinstance(value, dict) and set(value) == {"secure"}:
        return None
    return copy.deepcopy(value) if isinstance(value, list | dict) else None


def apply_path_override(values: dict[str, object], text: str, existing=lambda key: None) -> str:
    """``pulumi config set --path 'KEY[0].name' VALUE``: edit the list/map under KEY (returned),
    starting from ``existing(KEY)`` (the stack file's value, as the CLI does) or a new one."""
    if "=" not in text:
        raise PlanError(f"--config-path {text!r}: expected PATH=VALUE, e.g. 'allowedCidrs[0]=203.0.113.7/32'")
    path, raw = text.split("=", 1)
    path = path.strip() if ":" in path.split("[")[0].split(".")[0] else f"gpu-k8s:{path.strip()}"
    m = re.match(r"[\w-]+:[A-Za-z_][\w-]*", path)
    if not m:
        raise PlanError(f"--config-path {text!r}: expected a key such as gpu-k8s:allowedCidrs[0]")
    key, rest = m.group(0), path[m.end() :]
    segments: list[str | int] = []
    while rest:
        seg = _PATH_SEGMENT.match(rest)
        if not seg:
            raise PlanError(f'--config-path {path!r}: cannot read {rest!r} (use name[0], name.field or name["a.b"])')
        segments.append(int(seg["index"]) if seg["index"] is not None else seg["name"] or seg["quoted"])
        rest = rest[seg.end() :]
    if not segments:  # a single-segment path stores a plain string
        values[key] = raw
        return key
    if key not in values:
        stored = existing(key)
        if stored is not None:
            values[key] = stored
    parent: object = values
    step: str | int = key
    for nxt in segments:
        container = parent[step] if _has(parent, step) else None
        if not isinstance(container, list | dict):
            container = [] if isinstance(nxt, int) else {}
            _put(parent, step, container, path)
        parent, step = container, nxt
    _put(parent, step, _path_value(raw), path)
    return key


def _has(container: object, step: str | int) -> bool:
    if isinstance(container, dict):
        return step in container
    return isinstance(container, list) and isinstance(step, int) and step < len(container)


def _put(container: object, step: str | int, value: object, path: str) -> None:
    if isinstance(container, list):
        if not isinstance(step, int) or step > len(container):
            raise PlanError(f"--config-path {path!r}: array index out of range (as `pulumi config set --path` says)")
        if step == len(container):
            container.append(value)
        else:
            container[step] = value
    elif isinstance(container, dict):
        container[step] = value


def parse_assume(facts: list[str]) -> dict[str, object]:
    """--assume FACT=VALUE: what the mock cloud answers (PlaceholderMocks keyword arguments)."""
    out: dict[str, object] = {}
    for text in facts:
        fact, _, value = text.partition("=")
        fact = fact.strip()
        if fact == "image" and value:
            out["image"] = value
        elif fact == "zones":
            out["zones"] = [z.strip() for z in value.split(",") if z.strip()]
        elif fact == "now":
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                when = None
            if when is None or when.tzinfo is None or not 1970 <= when.year <= 9000:
                raise PlanError(
                    f"--assume now={value!r}: expected an ISO 8601 UTC time from 1970 to 9000, e.g. now=2027-01-15T12:00:00Z"
                )
            out["clock"] = (lambda epoch: lambda: epoch)(when.astimezone(UTC).timestamp())
        elif fact == "gpu-test" and value in ("passed", "failed", "timeout"):
            out["gpu_test"] = value
        else:
            raise PlanError(
                f"--assume {text!r}: expected image=<image id>, zones=<zone,zone>, now=<ISO 8601 UTC> "
                "or gpu-test=passed|failed|timeout"
            )
    return out


def plan(
    stack: str,
    overrides: list[str | tuple[str, str]],
    *,
    assume: list[str] | None = None,
    previous: list[engine.State] | None = None,
    replace: list[str] | None = None,
    previous_outputs: dict | None = None,
) -> ProgramRun:
    """Run the program; ``overrides``: "KEY=VALUE" (plain) or ("path", "KEY[0]=VALUE") entries."""
    from components.config import ConfigError

    values: dict[str, object] = {}
    flags: dict[str, str] = {}  # key -> the option that set it last
    for entry in overrides:
        kind, text = entry if isinstance(entry, tuple) else ("plain", entry)
        if kind == "path":
            flags[apply_path_override(values, text, existing=lambda key: _stored_object(stack, key))] = "--config-path"
        else:
            key, value = parse_override(text)
            values[key] = value
            flags[key] = "--config"
    mocks = PlaceholderMocks(**parse_assume(assume or []))
    try:
        stored = harness.stack_config(stack)
        _check_known_keys([*stored, *values])
        _check_plain_credentials(stack, stored, flags)
        return run_program(
            stack, values, mocks=mocks, previous=previous, replace=replace or (), previous_outputs=previous_outputs
        )
    except FileNotFoundError as err:
        raise PlanError(str(err)) from None
    except harness.StackFileError as err:
        raise PlanError(str(err)) from None
    except yaml.YAMLError as err:
        raise PlanError(f"stacks/Pulumi.{stack}.yaml or Pulumi.yaml is not valid YAML: {' '.join(str(err).split())}") from None
    except harness.ConfigTypeError as err:
        raise PlanError(f"config error: {err}: {_type_hint(err)}") from None
    except ConfigError as err:
        raise PlanError(f"config error: {err}{_zone_hint(err, mocks)}") from None
    except pulumi.RunError as err:  # e.g. components/ack/backend.py TtlPassed: what `pulumi up` would stop with
        raise PlanError(" ".join(str(err).split())) from None


def _zone_hint(err, mocks: PlaceholderMocks) -> str:
    """A zone refused offline was refused against the zone list --assume gave: say so."""
    if err.key not in ("zoneId", "instanceType") or "zone" not in str(err) or mocks.zones is None:
        return ""
    return (
        f"\n  offline: the zones are those of --assume zones={','.join(mocks.zones)}; without --assume a pinned "
        "zoneId is planned as given and checked at deploy time (get_zones)"
    )


def _type_hint(err: harness.ConfigTypeError) -> str:
    """What the CLI would accept instead (its own message names no value)."""
    got = f"got {err.value!r} ({'plain text' if isinstance(err.value, str) else type(err.value).__name__})"
    if err.type_name.startswith("array"):
        return (
            f"{got}; expected a list: `pulumi config set --path '{err.key}[0]' VALUE` "
            f"(here --config-path '{err.key}[0]=VALUE') or a YAML list in the stack file"
        )
    expected = {"integer": "a whole number", "boolean": "true or false", "string": "text"}.get(err.type_name, err.type_name)
    return f"{got}; expected {expected}"


def _check_known_keys(keys: list[str]) -> None:
    """A misspelt gpu-k8s key would be silently ignored (Pulumi does not check): refuse it."""
    known = set(harness.project_defaults())
    for key in keys:
        if key.startswith("gpu-k8s:") and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PlanError(f"config error: {key} is not a gpu-k8s config key; expected one declared in Pulumi.yaml{hint}")
    _check_other_namespaces(keys)


# Provider credentials: only as `secure:` values (`pulumi config set --secret`) or the environment.
CREDENTIAL_KEYS = {
    "alicloud:accessKey": "ALICLOUD_ACCESS_KEY/ALICLOUD_SECRET_KEY environment variables",
    "alicloud:secretKey": "ALICLOUD_ACCESS_KEY/ALICLOUD_SECRET_KEY environment variables",
    "alicloud:securityToken": "ALICLOUD_SECURITY_TOKEN environment variable",
}


def _check_plain_credentials(stack: str, stored: dict[str, object], flags: dict[str, str]) -> None:
    """An Aliyun key in plain text (a stack-file scalar, or `pulumi config set` without --secret,
    which --config plays) ends up in git and in every copy of the file: refuse it, never echo it."""
    for key, env in CREDENTIAL_KEYS.items():
        expected = f"expected `pulumi config set --secret {key}` (a secure: value) or the {env}"
        if key in flags:
            raise PlanError(
                f"config error: {key} given with {flags[key]} is plain text, as `pulumi config set` without --secret "
                f"stores it in stacks/Pulumi.{stack}.yaml; {expected}"
            )
        value = stored.get(key)
        if value not in (None, "") and not (isinstance(value, dict) and set(value) == {"secure"}):
            raise PlanError(f"config error: {key} is stored in plain text in stacks/Pulumi.{stack}.yaml; {expected}")


# Config namespaces this program's providers read. Keys of the providers whose Python SDK
# ships a config module are checked against it (pulumi_alicloud/config/vars.py: region,
# accessKey, secretKey, profile, securityToken, ...); the others accept any key.
PROVIDER_SDKS = {"alicloud": "pulumi_alicloud", "tls": "pulumi_tls"}
OPEN_NAMESPACES = ("kubernetes", "command", "random", "pulumi")


def provider_config_keys(namespace: str) -> set[str]:
    """The keys a provider SDK reads (``__config__.get('key')`` in its config/vars.py)."""
    import importlib.util

    spec = importlib.util.find_spec(f"{PROVIDER_SDKS[namespace]}.config.vars")
    text = Path(spec.origin).read_text() if spec and spec.origin else ""
    return set(re.findall(r"__config__\.get\w*\('(\w+)'", text))


def _check_other_namespaces(keys: list[str]) -> None:
    """alicloud:regoin is as silent as gpu-k8s:instanceTyp: refuse keys no provider reads."""
    namespaces = ("gpu-k8s", *PROVIDER_SDKS, *OPEN_NAMESPACES)
    for key in keys:
        namespace, _, name = key.partition(":")
        if namespace == "gpu-k8s" or namespace in OPEN_NAMESPACES:
            continue
        if namespace in PROVIDER_SDKS:
            known = provider_config_keys(namespace)
            if name in known:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {namespace}:{close[0]}?)" if close else ""
            raise PlanError(
                f"config error: {key} is not a config key of the {namespace} provider; expected one its SDK reads "
                f"({PROVIDER_SDKS[namespace]}/config/vars.py){hint}"
            )
        close = difflib.get_close_matches(namespace, namespaces, n=1)
        hint = f" (did you mean {close[0]}:{name}?)" if close else ""
        raise PlanError(
            f"config error: {key}: no provider reads the namespace {namespace!r}; expected one of {', '.join(namespaces)}{hint}"
        )


def _resource_entry(run: ProgramRun, r: harness.Resource) -> dict:
    """A registered resource as the state it leaves (what a later --diff plays against)."""
    entry = {
        "urn": r.urn,
        "type": r.type,
        "name": r.name,
        "parent": r.parent,
        "provider": r.provider,
        "dependencies": r.dependencies,
        "propertyDependencies": {"connection": r.property_dependencies.get("connection", [])},
        # Secrets as "[secret <digest>]": a later --diff sees a change, never the value.
        "inputs": canonical(r.inputs),
        "id": r.id,
        "options": r.options,
        "outputs": canonical(harness.secret_outputs(r)),
    }
    if r.name in run.failed:
        before = run.previous.get(r.urn)
        if before is None:
            entry["failed"] = True  # a failed create records nothing: the next up runs it again
        else:  # a failed update or replace keeps the state it had
            entry.update(id=before.id, inputs=before.inputs, outputs=before.outputs, failedUpdateKeptState=True)
    return entry


def _state_entry(st: engine.State) -> dict:
    return {
        "urn": st.urn,
        "type": st.type,
        "name": st.name,
        "id": st.id,
        "inputs": st.inputs,
        "outputs": st.outputs,
        "provider": st.provider,
        "options": st.options,
        "propertyDependencies": {"connection": list(st.connection_dependencies)},
    }


def as_json(run: ProgramRun) -> dict:
    outputs, legend = offline_outputs(run.outputs)
    return {
        "stack": run.stack,
        "resources": [_resource_entry(run, r) for r in run.resources],
        # A failed run against a previous state: what it never reached stays in state as it was.
        **({"notReached": [_state_entry(st) for st in run.not_reached]} if run.not_reached else {}),
        "outputs": outputs,
        "outputsKept": run.outputs_kept,
        "placeholders": {**run.placeholders, **legend},
        "warnings": run.warnings,
        "errors": run.errors,
    }


def load_previous(path: Path, stack: str) -> list[engine.State]:
    """The state a saved plan (``--json``) describes: what a first `pulumi up` left."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise PlanError(f"--diff {path}: not a plan saved with --json ({' '.join(str(err).split())})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), list):
        raise PlanError(f"--diff {path}: not a plan saved with --json (no resources)")
    if doc.get("stack") != stack:
        raise PlanError(
            f"--diff {path}: saved for stack {doc.get('stack')!r}, not {stack!r}; expected --stack {doc.get('stack')}"
        )
    if any("id" not in r or "options" not in r for r in doc["resources"]):
        raise PlanError(f"--diff {path}: saved without state (ids, options); expected a plan saved by this version's --json")
    return [
        engine.State(
            r["urn"],
            r["type"],
            r["name"],
            r["id"],
            r["inputs"],
            r.get("outputs") or {},
            r["provider"],
            r["options"],
            tuple((r.get("propertyDependencies") or {}).get("connection") or ()),
        )
        for r in [*doc["resources"], *(doc.get("notReached") or [])]
        if not r.get("failed")  # a failed step is not in state: the next up runs it again
    ]


_OP_MARK = {engine.UPDATE: "~", engine.REPLACE: "+-", engine.CREATE: "+", engine.DELETE: "-"}
INSTANCE = "alicloud:ecs/instance:Instance"
ACK_CLUSTER = "alicloud:cs/managedKubernetes:ManagedKubernetes"


def day2_notes(run: ProgramRun) -> list[str]:
    """What a second `up` does that one resource's op does not say: said before it happens."""
    notes = []
    by_urn = run.by_urn()
    for c in run.changes:
        r = by_urn.get(c.urn)
        if c.op != engine.REPLACE or r is None:
            continue
        if c.type == INSTANCE and (r.inputs.get("tags") or {}).get("gpu-k8s-role") == "control-plane":
            notes.append(
                f"REBUILD: the control-plane instance {c.name} is replaced ({', '.join(c.keys)}), so the cluster is "
                "rebuilt on the new one: kubeadm init there, every worker reset and joined to the new cluster, "
                "every Kubernetes object created again, the GPU test run again. Workloads and their data on the "
                "cluster are lost; run `make kubeconfig` again afterwards."
            )
        if c.type == ACK_CLUSTER:
            notes.append(
                f"REBUILD: the ACK cluster {c.name} is replaced ({', '.join(c.keys)}; the old one is deleted first): "
                "its node pools, every Kubernetes object and the GPU test follow the new cluster; run "
                "`make kubeconfig` again afterwards."
            )
    if run.outputs_kept:
        notes.append(
            "OUTPUTS KEPT: a failed `up` records no new stack outputs; the previous update's stay "
            "(`make outputs` marks them STALE)."
        )
    return notes


def render_diff(run: ProgramRun, previous: Path) -> str:
    counts = engine.summary(run.changes)
    lines = [f"What a second `pulumi up -s {run.stack}` would do against {previous} (offline engine model):", ""]
    notes = day2_notes(run)
    if notes:
        lines += [f"  ! {note}" for note in notes] + [""]
    for c in run.changes:
        if c.op == engine.SAME:
            if c.note:
                lines.append(f"  {'':>2} {'same':<8} {c.type}  {c.name}  ({c.note})")
            continue
        keys = f"  [{', '.join(c.keys)}]" if c.keys else ""
        note = f"  ! {c.note}" if c.note.startswith("DESTRUCTIVE") else (f"  ({c.note})" if c.note else "")
        lines.append(f"  {_OP_MARK[c.op]:>2} {c.op:<8} {c.type}  {c.name}{keys}{note}")
    if all(c.op == engine.SAME for c in run.changes):
        lines.append("  nothing changes")
    lines += ["", ", ".join(f"{n} {op}" for op, n in counts.items()) + "."]
    return "\n".join(lines) + "\n"


def render_errors(run: ProgramRun) -> str:
    lines = ["", "`pulumi up` would FAIL (exit 3 here):"]
    lines += [f"    x {e}" for e in run.errors]
    return "\n".join(lines) + "\n"


def _short(value: object, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_text(run: ProgramRun) -> str:
    by_urn = run.by_urn()
    children: dict[str, list] = {}
    for r in run.resources:
        parent = r.parent if r.parent in by_urn else ""
        children.setdefault(parent, []).append(r)
    lines = [f"Plan for stack '{run.stack}' (offline: nothing is created; placeholders are explained below)", ""]

    def walk(parent: str, depth: int) -> None:
        for r in children.get(parent, []):
            shown = []
            for key in KEY_INPUTS.get(r.type, []):
                if key in r.inputs:
                    value = redact(r.inputs[key])
                    if key == "metadata" and isinstance(value, dict):
                        value = "/".join(x for x in (value.get("namespace"), value.get("name")) if x)
                    shown.append(f"{key}={_short(value)}")
            lines.append(f"{'    ' * depth}+ {r.type}  {r.name}" + (f"  [{', '.join(shown)}]" if shown else ""))
            walk(r.urn, depth + 1)

    walk("", 0)
    lines += ["", f"{len(run.resources)} resources to create.", "", "Outputs:"]
    outputs, legend = offline_outputs(run.outputs)
    for key, value in outputs.items():
        note = f"   <- {DEPLOY_TIME_OUTPUTS[key]}" if key in DEPLOY_TIME_OUTPUTS else ""
        if key == "timings" and not isinstance(value, dict):
            note = ""  # a sentence, not measurements (ACK: no node steps of ours)
        if key == "gpuNodes" and "(expected)" in json.dumps(value):
            note = (
                "   <- placeholder: allocatable and test come from the cluster at deploy time; "
                "GPU and driver are the catalog's and the requested (ACK: nvidia-smi is not read)"
            )
        if key == "cost" and isinstance(value, dict):
            lines += render_cost(value)
            continue
        lines.append(f"    {key}: {_short(value, 200)}{note}")
    if run.warnings:
        lines += ["", "Warnings:"] + [f"    ! {w}" for w in run.warnings]
    lines += ["", "Placeholders (values the cloud decides at deploy time):"]
    lines += [f"    {value}  = {label}" for value, label in {**run.placeholders, **legend}.items()]
    return "\n".join(lines) + "\n"


def render_cost(cost: dict) -> list[str]:
    """The cost output whole: totals first (never cut), then one line per node."""
    cur = cost.get("currency", "CNY")
    kind = "estimate" if cost.get("estimate") else "Aliyun's price"
    ttl = cost.get("ttlHours")
    lines = [
        f"    cost ({kind}, {cur}):",
        f"        per hour:                 {cost.get('hourlyTotal')}",
        f"        most before auto-release: {cost.get('maxBeforeAutoRelease')}" + (f" (after {ttl:g} h)" if ttl else ""),
    ]
    if cost.get("afterAutoRelease"):
        lines.append(f"        after auto-release:       {cost['afterAutoRelease']}")
    for row in cost.get("perNode") or []:
        price = row.get("hourly")
        shown = f"{price} {cur}/h" if price is not None else "unknown"
        lines.append(f"        {row.get('node')} ({row.get('instanceType')}): {shown}  [{row.get('source')}]")
    for fee in cost.get("clusterFees") or []:  # ACK: what bills beside the nodes
        lines.append(f"        {fee.get('item')}: {fee.get('hourly')} {cur}/h  [{fee.get('source')}]")
    for target, baked in (cost.get("bakedImages") or {}).items():  # nodeImage bake: kept after `make down`
        lines.append(f"        {target} {baked.get('item')}: {baked.get('monthly')} CNY/month  [{baked.get('source')}]")
        if baked.get("builder"):
            lines.append(f"            builder: {baked['builder']}")
    return lines


# The file list an --out directory keeps: each file (path relative to DIR) the last plan wrote
# there. The next plan removes only those (a fresh tree), never a file it did not write.
OUT_MANIFEST = ".gpu-k8s-plan-files"
# What else may already be in DIR: `make plan-save` writes plan-out/<stack>/before.json.
OUT_NEIGHBOURS = ("before.json",)


def _listed(out: Path) -> set[str]:
    """The files an earlier plan wrote to ``out`` (its file list); none outside ``out``."""
    try:
        text = (out / OUT_MANIFEST).read_text()
    except FileNotFoundError:
        return set()
    except (OSError, UnicodeDecodeError) as err:
        why = " ".join(str(getattr(err, "strerror", None) or err).split())
        raise PlanError(
            f"--out {out}: cannot read {OUT_MANIFEST} ({why}); expected the file list an earlier plan wrote"
        ) from None
    listed = set()
    for line in text.splitlines():
        rel = PurePosixPath(line)
        if line and line != OUT_MANIFEST and not rel.is_absolute() and ".." not in rel.parts and rel.as_posix() == line:
            listed.add(line)
    return listed


def prepare_out(out: Path) -> None:
    """A new or empty directory, or one an earlier plan wrote (with its file list); else PlanError.
    Nothing is removed here (write_out removes the earlier plan's own files)."""
    if out.exists() and not out.is_dir():
        raise PlanError(f"--out {out}: exists and is not a directory; expected a new directory or one an earlier plan wrote")
    try:
        if out.is_dir() and not (out / OUT_MANIFEST).is_file():
            if (out / "plan.json").exists():
                raise PlanError(
                    f"--out {out}: holds a plan.json written before plans kept their file list ({OUT_MANIFEST}), so "
                    "which files are the plan's is not known; expected a directory with that list: remove plan.json, "
                    "scripts/, manifests/ and node-labels/ there once (keep your own files), or choose another --out"
                )
            if any(p.name not in OUT_NEIGHBOURS for p in out.iterdir()):
                raise PlanError(
                    f"--out {out}: not empty and holds no {OUT_MANIFEST} from an earlier plan; "
                    "expected a new directory or one an earlier plan wrote"
                )
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
        _listed(out)  # readable
    except OSError as err:
        raise PlanError(
            f"--out {out}: cannot write there ({err.strerror or err}); expected a new directory or one an earlier plan wrote"
        ) from None


def out_files(run: ProgramRun) -> dict[str, str]:
    """What --out writes, by path relative to DIR: plan.json, every remote script as it will run,
    every Kubernetes manifest."""
    files = {"plan.json": json.dumps(as_json(run), indent=2, default=str) + "\n"}
    from components.steps import render_script

    copies = {r.name: r for r in run.of_type("command:remote:CopyToRemote")}
    for r in run.of_type("command:remote:Command"):
        create = redact(r.inputs.get("create", ""))
        if not isinstance(create, str) or "/opt/gpu-k8s/" not in create:
            continue
        copied = copies.get(f"{r.name}-copy")
        source = copied.inputs.get("source") if copied is not None else None
        if isinstance(source, pulumi.asset.StringAsset):
            body = source.text  # what is copied to the node (lib/ helpers inlined), whatever its file name
        else:
            body = render_script(shlex.split(create)[-1].rsplit("/", 1)[-1])
        stdin_note = "# stdin: [secret]\n" if "stdin" in r.inputs and r.inputs["stdin"] is not None else ""
        shebang, _, rest = body.partition("\n")
        files[f"scripts/{r.name}.sh"] = f"{shebang}\n# resource: {r.name}\n# runs on the node as: {create}\n{stdin_note}{rest}"
    try:
        from tools.manifests import render_manifests
    except ImportError:
        render_manifests = None
    if render_manifests is not None:
        for rel, text in render_manifests(run).items():
            if (yaml.safe_load(text) or {}).get("kind") == "Node":
                # Label patches for this stack's own node names: not for another cluster.
                rel = f"node-labels/{PurePosixPath(rel).name}"
            files[rel] = text
    return files


def check_out(out: Path, files: dict[str, str]) -> None:
    """Refuse to write over a file an earlier plan did not write (a user's, or another tool's)."""
    listed = _listed(out)
    for rel in files:
        path = out / rel
        if rel not in listed and (path.exists() or path.is_symlink()):
            raise PlanError(
                f"--out {out}: {rel} is there and was not written by an earlier plan (not in {OUT_MANIFEST}); "
                "expected no such file: move it or choose another --out"
            )


def _write_manifest(out: Path, rels: set[str]) -> None:
    tmp = out / f"{OUT_MANIFEST}.tmp"
    tmp.write_text("".join(f"{rel}\n" for rel in sorted(rels)))
    tmp.replace(out / OUT_MANIFEST)


def write_out(run: ProgramRun, out: Path, files: dict[str, str] | None = None) -> list[Path]:
    """Write ``out_files`` under ``out``: the earlier plan's files (its file list) are removed
    first, and only those; a file of the same name it did not write is refused (check_out)."""
    files = out_files(run) if files is None else files
    check_out(out, files)
    out.mkdir(parents=True, exist_ok=True)
    listed = _listed(out)
    # The list first holds both runs' files: a run cut short still knows what it may have left.
    _write_manifest(out, listed | set(files))
    inside = out.resolve()
    for rel in sorted(listed):
        path = out / rel
        if (path.is_symlink() or path.is_file()) and path.parent.resolve().is_relative_to(inside):
            path.unlink()  # a link itself, never what it points to
    for rel in sorted(listed - set(files), reverse=True):  # directories the earlier plan emptied
        parent = (out / rel).parent
        while parent != out and parent.is_dir() and not parent.is_symlink() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    _write_manifest(out, set(files))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name: stacks/Pulumi.<stack>.yaml (default dev)")
    parser.add_argument(
        "--config",
        dest="settings",
        action="append",
        default=[],
        type=lambda t: ("plain", t),
        metavar="KEY=VALUE",
        help="override a config value as `pulumi config set` stores it: plain text (repeatable)",
    )
    parser.add_argument(
        "--config-path",
        dest="settings",
        action="append",
        type=lambda t: ("path", t),
        metavar="PATH=VALUE",
        help="as `pulumi config set --path`, e.g. 'allowedCidrs[0]=203.0.113.7/32' (repeatable)",
    )
    parser.add_argument(
        "--assume",
        action="append",
        default=[],
        metavar="FACT=VALUE",
        help="what the cloud answers: image=ID, zones=Z1,Z2, now=ISO-8601-UTC, gpu-test=passed|failed|timeout",
    )
    parser.add_argument(
        "--diff", type=Path, metavar="PREVIOUS.json", help="what `pulumi up` would change against a saved --json plan"
    )
    parser.add_argument(
        "--replace", action="append", default=[], metavar="URN", help="with --diff: as `pulumi up --replace URN` (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    parser.add_argument("--out", type=Path, help="write plan.json, rendered scripts and manifests to DIR")
    parser.add_argument(
        "--urns",
        metavar="REGEX",
        help="print only the URNs of resources whose name matches REGEX (for pulumi up --replace)",
    )
    args = parser.parse_args(argv)
    try:
        if args.replace and not args.diff:
            raise PlanError("--replace needs --diff PREVIOUS.json (a replace is relative to what is deployed)")
        if args.out:
            prepare_out(args.out)
        previous = load_previous(args.diff, args.stack) if args.diff else None
        previous_outputs = json.loads(args.diff.read_text()).get("outputs") if args.diff else None
        run = plan(
            args.stack,
            args.settings,
            assume=args.assume,
            previous=previous,
            replace=args.replace,
            previous_outputs=previous_outputs,
        )
    except PlanError as err:
        print(f"gpu-k8s plan: {err}", file=sys.stderr)
        return 2
    failed = 3 if run.errors else 0
    if args.diff:
        if args.json:
            doc = {"changes": [c.as_dict() for c in run.changes], "errors": run.errors, "notes": day2_notes(run)}
            json.dump(doc, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(render_diff(run, args.diff) + (render_errors(run) if failed else ""))
        return failed
    if args.urns is not None:
        try:
            pattern = re.compile(args.urns)
        except re.error as err:
            print(f"gpu-k8s plan: --urns {args.urns!r} is not a regular expression: {err}", file=sys.stderr)
            return 2
        for r in run.resources:
            if pattern.search(r.name):
                print(r.urn)
        return 0
    files = None
    if args.out:
        try:
            files = out_files(run)
            check_out(args.out, files)  # before the plan is printed: nothing written, nothing shown
        except PlanError as err:
            print(f"gpu-k8s plan: {err}", file=sys.stderr)
            return 2
    if args.json:
        json.dump(as_json(run), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(run) + (render_errors(run) if failed else ""))
    if args.out:
        try:
            written = write_out(run, args.out, files)
        except PlanError as err:
            print(f"gpu-k8s plan: {err}", file=sys.stderr)
            return 2
        except OSError as err:
            print(f"gpu-k8s plan: --out {args.out}: cannot write there ({err.strerror or err})", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(main())
