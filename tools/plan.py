"""Offline plan: what `pulumi up -s <stack>` would create, without a cloud account.

    python -m tools.plan --stack dev [--config KEY=VALUE ...] [--json] [--out DIR]

It evaluates the real __main__.py under the project's mocks with the stack's real
config (Pulumi.yaml defaults < stacks/Pulumi.<stack>.yaml < --config). Values only the
cloud knows are placeholders, listed in a legend. A config error exits 2 with one line.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import yaml

from tools import harness
from tools.harness import ProgramRun, redact, run_program

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
        row["gpu"] = _gpu_name_placeholder(row.get("gpu"))
        row["driver"] = _driver_placeholder(row.get("driver"))
        row["allocatableGpus"] = _allocatable_placeholder(row.get("allocatableGpus"))
        if row.get("test") != "SKIPPED":
            row["test"] = PLACEHOLDER_TEST
        legend["<placeholder: ...> in gpuNodes"] = (
            "GPU name, driver, allocatable GPUs and test come from each node at deploy time"
        )
    return shown, legend


class PlanError(Exception):
    """A user mistake: printed as one line, exit 2."""


def parse_override(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise PlanError(f"--config {text!r}: expected KEY=VALUE, e.g. gpu-k8s:instanceType=ecs.gn6i-c4g1.xlarge")
    key, raw = text.split("=", 1)
    key = key.strip()
    if ":" not in key:
        key = f"gpu-k8s:{key}"
    # Lists and maps as YAML/JSON; everything else stays the string the CLI would store.
    value: object = raw
    if raw.strip().startswith(("[", "{")):
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise PlanError(f"--config {key}: {raw!r} is not valid YAML/JSON") from None
    return key, value


def plan(stack: str, overrides: list[str]) -> ProgramRun:
    from components.config import ConfigError

    values = dict(parse_override(o) for o in overrides)
    try:
        _check_known_keys([*harness.stack_config(stack), *values])
        return run_program(stack, values)
    except FileNotFoundError as err:
        raise PlanError(str(err)) from None
    except yaml.YAMLError as err:
        raise PlanError(f"stacks/Pulumi.{stack}.yaml or Pulumi.yaml is not valid YAML: {' '.join(str(err).split())}") from None
    except ConfigError as err:
        raise PlanError(f"config error: {err}") from None


def _check_known_keys(keys: list[str]) -> None:
    """A misspelt gpu-k8s key would be silently ignored (Pulumi does not check): refuse it."""
    known = set(harness.project_defaults())
    for key in keys:
        if key.startswith("gpu-k8s:") and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise PlanError(f"config error: {key} is not a gpu-k8s config key; expected one declared in Pulumi.yaml{hint}")
    _check_other_namespaces(keys)


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


def as_json(run: ProgramRun) -> dict:
    outputs, legend = offline_outputs(run.outputs)
    return {
        "stack": run.stack,
        "resources": [
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "parent": r.parent,
                "provider": r.provider,
                "dependencies": r.dependencies,
                "inputs": redact(r.inputs),
            }
            for r in run.resources
        ],
        "outputs": outputs,
        "placeholders": {**run.placeholders, **legend},
        "warnings": run.warnings,
    }


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
    for row in cost.get("perNode") or []:
        price = row.get("hourly")
        shown = f"{price} {cur}/h" if price is not None else "unknown"
        lines.append(f"        {row.get('node')} ({row.get('instanceType')}): {shown}  [{row.get('source')}]")
    return lines


# What write_out creates in DIR; an earlier run's copies are removed first (a fresh tree).
OUT_ENTRIES = ("plan.json", "scripts", "manifests", "node-labels")


def prepare_out(out: Path) -> None:
    """A new or earlier plan-out directory, emptied of what an earlier run wrote; else PlanError."""
    accepted = "expected a new directory or one an earlier plan wrote (with plan.json)"
    if out.exists() and not out.is_dir():
        raise PlanError(f"--out {out}: exists and is not a directory; {accepted}")
    if out.is_dir() and any(out.iterdir()) and not (out / "plan.json").is_file():
        raise PlanError(f"--out {out}: not empty and holds no plan.json from an earlier plan; {accepted}")
    try:
        for entry in OUT_ENTRIES:
            path = out / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PlanError(f"--out {out}: cannot write there ({err.strerror or err}); {accepted}") from None


def write_out(run: ProgramRun, out: Path) -> list[Path]:
    """plan.json, every remote script as it will run, every Kubernetes manifest."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "plan.json"]
    written[0].write_text(json.dumps(as_json(run), indent=2, default=str) + "\n")
    from components.remote import render_script

    for r in run.of_type("command:remote:Command"):
        create = redact(r.inputs.get("create", ""))
        if not isinstance(create, str) or "/opt/gpu-k8s/" not in create:
            continue
        script = shlex.split(create)[-1].rsplit("/", 1)[-1]
        body = render_script(script)  # what is copied to the node: lib/ helpers inlined
        stdin_note = "# stdin: [secret]\n" if "stdin" in r.inputs and r.inputs["stdin"] is not None else ""
        path = out / "scripts" / f"{r.name}.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        shebang, _, rest = body.partition("\n")
        path.write_text(f"{shebang}\n# resource: {r.name}\n# runs on the node as: {create}\n{stdin_note}{rest}")
        written.append(path)
    try:
        from tools.manifests import render_manifests
    except ImportError:
        render_manifests = None
    if render_manifests is not None:
        for rel, text in render_manifests(run).items():
            path = out / rel
            if (yaml.safe_load(text) or {}).get("kind") == "Node":
                # Label patches for this stack's own node names: not for another cluster.
                path = out / "node-labels" / Path(rel).name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev", help="stack name: stacks/Pulumi.<stack>.yaml (default dev)")
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON on stdout")
    parser.add_argument("--out", type=Path, help="write plan.json, rendered scripts and manifests to DIR")
    parser.add_argument(
        "--urns",
        metavar="REGEX",
        help="print only the URNs of resources whose name matches REGEX (for pulumi up --replace)",
    )
    args = parser.parse_args(argv)
    try:
        if args.out:
            prepare_out(args.out)
        run = plan(args.stack, args.config)
    except PlanError as err:
        print(f"gpu-k8s plan: {err}", file=sys.stderr)
        return 2
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
    if args.json:
        json.dump(as_json(run), sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(run))
    if args.out:
        try:
            written = write_out(run, args.out)
        except OSError as err:
            print(f"gpu-k8s plan: --out {args.out}: cannot write there ({err.strerror or err})", file=sys.stderr)
            return 2
        print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
