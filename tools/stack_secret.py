"""Read the kubeconfig or the SSH private key from a stack's *state* (`pulumi stack export`).

`make kubeconfig` / `make ssh-key` read the stack outputs first. When `pulumi up` failed
(for example the GPU test failed on the first deploy), the engine records no stack
outputs at all: the Python SDK registers them in one call, which fails as soon as one
output is rejected. The resources are in state all the same, so this reads them there:

    pulumi stack export -s dev --show-secrets | python -m tools.stack_secret kubeconfig

kubeconfig: the stdout of the `<name>-kubeconfig` remote command (41-kubeconfig.sh) on the
kubeadm backend; on ACK (which has no such command: the kubeconfig comes from ACK's API at
every run) the kubeconfig input of the Kubernetes provider, which the state keeps;
ssh-key: the `privateKeyOpenssh` of the tls PrivateKey. Prints the value on stdout; one
line on stderr and exit 2 when it is not there (or still encrypted: --show-secrets).

With ``--stack S --to FILE`` (what the make targets run) it asks the Pulumi CLI itself: the
stack output first, then the state, and writes FILE (mode 600) only when it has the value:
a missing CLI, stack or value leaves FILE as it was, with one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Pulumi's wire marker of a secret in exported state ({sig: secret, "plaintext": json}).
_SECRET_SIG = "4dabf18193072939515e22adb298388d"
WANTED = {
    "kubeconfig": ("command:remote:Command", "-kubeconfig", "stdout"),
    "ssh-key": ("tls:index/privateKey:PrivateKey", "", "privateKeyOpenssh"),
}
# Where else a value is when the first place is absent: (type, URN suffix, input key).
FALLBACK = {"kubeconfig": ("pulumi:providers:kubernetes", "", "kubeconfig")}


class NotInState(Exception):
    pass


def _plain(value: object) -> object:
    if isinstance(value, dict) and _SECRET_SIG in value:
        if "plaintext" not in value:
            raise NotInState("the value is encrypted: export with --show-secrets")
        return json.loads(value["plaintext"])
    return value


def find(export: dict, what: str) -> str:
    """The wanted secret from a `pulumi stack export` document."""
    type_, suffix, key = WANTED[what]
    deployment = export.get("deployment") if isinstance(export, dict) else None
    resources = deployment.get("resources") if isinstance(deployment, dict) else None
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise NotInState("stdin is not a `pulumi stack export` document (no deployment.resources list)")
    found = [r for r in resources if r.get("type") == type_ and str(r.get("urn", "")).endswith(suffix)]
    if not found and what in FALLBACK:
        fb_type, fb_suffix, fb_key = FALLBACK[what]
        providers = [r for r in resources if r.get("type") == fb_type and str(r.get("urn", "")).endswith(fb_suffix)]
        if len(providers) == 1:
            value = _plain((providers[0].get("inputs") or {}).get(fb_key))
            if isinstance(value, str) and value.strip():
                return value if value.endswith("\n") else value + "\n"
    if len(found) != 1:
        raise NotInState(f"{len(found)} resources of type {type_} ending in {suffix!r} in the state (expected 1)")
    value = _plain((found[0].get("outputs") or {}).get(key))
    if not isinstance(value, str) or not value.strip():
        raise NotInState(f"{found[0]['urn']} has no {key} in the state (did that step run?)")
    return value if value.endswith("\n") else value + "\n"


# The stack output each value is first read from (`pulumi stack output NAME`).
OUTPUTS = {"kubeconfig": "kubeconfig", "ssh-key": "sshPrivateKey"}
PULUMI_INSTALL = "https://www.pulumi.com/docs/iac/download-install/"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def read_from_stack(what: str, stack: str) -> str:
    """The value from `pulumi stack output`, else from `pulumi stack export` (``find``)."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise NotInState(f"the pulumi CLI is not on PATH; install it ({PULUMI_INSTALL})")

    def ask(*args: str) -> subprocess.CompletedProcess:
        # No stdin: a backend that wants a passphrase fails with a message instead of a hidden prompt.
        return subprocess.run([pulumi, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)

    output = ask("stack", "output", "-s", stack, "--show-secrets", OUTPUTS[what])
    if output.returncode == 0 and output.stdout.strip():
        return output.stdout if output.stdout.endswith("\n") else output.stdout + "\n"
    exported = ask("stack", "export", "-s", stack, "--show-secrets")
    if exported.returncode != 0:
        raise NotInState(f"pulumi stack export: {_last_line(exported.stderr)}")
    try:
        return find(json.loads(exported.stdout), what)
    except json.JSONDecodeError as err:
        raise NotInState(f"pulumi stack export printed no state ({err.msg})") from None


def write_file(what: str, stack: str, dest: Path) -> int:
    """``dest`` (mode 600) holds the value afterwards, or is as it was (one line, exit 2)."""
    if dest.is_dir() or not dest.parent.is_dir():
        print(f"make {what}: cannot write {dest}: {'a directory' if dest.is_dir() else 'no such directory'}", file=sys.stderr)
        return 2
    try:
        value = read_from_stack(what, stack)
    except NotInState as err:
        print(
            f"make {what}: no {OUTPUTS[what]} in stack {stack} ({err}); expected a stack `make up STACK={stack}` deployed",
            file=sys.stderr,
        )
        return 2
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")  # mode 600 from the start
    try:
        with os.fdopen(fd, "w") as file:
            file.write(value)
        os.replace(tmp, dest)  # whole or not at all
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.stack_secret",
        usage=f"pulumi stack export --show-secrets | python -m tools.stack_secret {'|'.join(WANTED)}\n"
        f"       python -m tools.stack_secret {'|'.join(WANTED)} --stack STACK --to FILE",
    )
    parser.add_argument("what", choices=sorted(WANTED))
    parser.add_argument("--stack", help="read the stack itself (pulumi stack output, then export); needs --to")
    parser.add_argument("--to", type=Path, metavar="FILE", help="write the value to FILE (mode 600), only when there is one")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if (args.stack is None) != (args.to is None):
        print("stack_secret: --stack and --to go together", file=sys.stderr)
        return 2
    if args.to is not None:
        return write_file(args.what, args.stack, args.to)
    try:
        export = json.load(sys.stdin)
        sys.stdout.write(find(export, args.what))
    except json.JSONDecodeError as err:
        print(f"stack_secret: stdin is not a `pulumi stack export` document ({err.msg})", file=sys.stderr)
        return 2
    except NotInState as err:
        print(f"stack_secret: {args.what}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
