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
"""

from __future__ import annotations

import json
import sys

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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in WANTED:
        print(f"usage: pulumi stack export --show-secrets | python -m tools.stack_secret {'|'.join(WANTED)}", file=sys.stderr)
        return 2
    try:
        export = json.load(sys.stdin)
        sys.stdout.write(find(export, args[0]))
    except json.JSONDecodeError as err:
        print(f"stack_secret: stdin is not a `pulumi stack export` document ({err.msg})", file=sys.stderr)
        return 2
    except NotInState as err:
        print(f"stack_secret: {args[0]}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
