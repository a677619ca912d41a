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


def as_json(run: ProgramRun) -> dict:
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
        "outputs": redact(run.outputs),
        "placeholders": run.placeholders,
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
    for key, value in redact(run.outputs).items():
        note = f"   <- {DEPLOY_TIME_OUTPUTS[key]}" if key in DEPLOY_TIME_OUTPUTS else ""
        lines.append(f"    {key}: {_short(value, 200)}{note}")
    if run.warnings:
        lines += ["", "Warnings:"] + [f"    ! {w}" for w in run.warnings]
    lines += ["", "Placeholders (values the cloud decides at deploy time):"]
    lines += [f"    {value}  = {label}" for value, label in run.placeholders.items()]
    return "\n".join(lines) + "\n"


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
        written = write_out(run, args.out)
        print(f"wrote {len(written)} files under {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
