"""The node images gpu-k8s:nodeImage bake made, kept after `make down`: list them, or delete them.

    python -m tools.baked_images --stack dev [--region R] [--all] [--delete]
                                               (make baked-images / make delete-images [ALL=yes])
    python -m tools.baked_images --stack dev --after-up ok|failed [--yes]   (make up, extend, retest, ...)

Reads the credentials `pulumi up` uses (ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY) and asks the
ECS API for this account's images tagged gpu-k8s-bake=1 (components/kubeadm/bake.py tags them)
and baked by the stack (gpu-k8s-baked-by-stack; --all: by any stack), in every status.
``--delete`` removes each image (DeleteImage, Force: nodes made from it keep running but cannot
re-initialise their disk from it) and then its snapshots (DeleteSnapshot), which keep billing
otherwise, once the image is gone. Exit 2, one line: no credentials or an API error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Mapping

from components.aliyun.ecs_api import EcsApi, PreflightError, credentials_from_env
from components.kubeadm.bake import SNAPSHOT_CNY_PER_GB_MONTH

BAKE_TAG = {"gpu-k8s-bake": "1"}
BUILDER_TYPE = "alicloud:ecs/instance:Instance"


# A builder is an instance inside a NodeImageBake component (its URN's type chain), whatever
# its name: a user's pool may be called "bake" too.
BUILDER_PARENT = "gpu-k8s:bake:NodeImageBake$"


def builders_in_state(export: object) -> list[str]:
    """The bake builders a `pulumi stack export` still holds (pure).

    A builder stays after the `up` that baked with it: that `up` cannot know the image exists
    when it starts, so the next `up` (which finds it) deletes the builder. Until then it bills
    as a GPU node, at most until its own auto-release.
    """
    deployment = export.get("deployment") if isinstance(export, dict) else None
    resources = (deployment or {}).get("resources") or []
    builders = []
    for r in resources:
        urn = r.get("urn", "") if isinstance(r, dict) else ""
        types, _, name = urn.rpartition("::")
        if r.get("type") == BUILDER_TYPE and BUILDER_PARENT in types:
            builders.append(name)
    return sorted(builders)


def _pulumi() -> str | None:
    return shutil.which("pulumi")


def after_up(stack: str, up_failed: bool, *, yes: bool = False, run=subprocess.run) -> int:
    """After a `pulumi up` of a make target: a bake builder left in the state is deleted by one
    more `up` (after a failed one, only named: the next `up` may bake again). ``yes``: the
    target's own `up` ran with --yes, so this one does too. Returns the exit status for make
    (that second `up`'s, else 0)."""
    pulumi = _pulumi()
    if pulumi is None:
        print("make: the pulumi CLI is not on PATH: cannot look for a bake builder left in the state", file=sys.stderr)
        return 0
    # No stdin: a backend that wants a passphrase fails with a message instead of a hidden prompt.
    export = run([pulumi, "stack", "export", "-s", stack], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    try:
        builders = builders_in_state(json.loads(export.stdout)) if export.returncode == 0 else None
    except json.JSONDecodeError:
        builders = None
    if builders is None:
        reason = " ".join((export.stderr or "no state").split())[:200]
        print(
            f"make: could not read stack {stack}'s state to look for a bake builder ({reason}); with nodeImage bake, "
            f"`pulumi stack export -s {stack}` shows any bake-* instance, which bills until an up deletes it",
            file=sys.stderr,
        )
        return 0
    if not builders:
        return 0
    names = ", ".join(builders)
    if up_failed:
        print(
            f"make: bake builder(s) {names} still bill as GPU nodes: the next successful `make up` deletes those "
            "whose image exists, `make down` all (each is released by its own auto-release within 3 h anyway)",
            file=sys.stderr,
        )
        return 0
    print(
        f"make: that up baked a node image (nodeImage bake); its builder(s) {names} bill as GPU nodes until the next "
        "up deletes them (at most 3 h, their auto-release). Running that up now: it deletes the builders and their "
        "steps; the image stays in the account and running nodes keep their disks.",
        flush=True,
    )
    return run([pulumi, "up", "-s", stack, *(["--yes"] if yes else [])], check=False).returncode


def stack_region(stack: str) -> str:
    """The stack's alicloud:region, read as the plan reads the stack file (harness.StackFileError,
    FileNotFoundError for a bad or missing stack file)."""
    from tools import harness

    return harness.effective_config(stack)["alicloud:region"]


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None, api_factory=EcsApi) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.baked_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="the stack whose bakes to list or delete (its region)")
    parser.add_argument("--region", help="another region than the stack's alicloud:region")
    parser.add_argument("--all", action="store_true", help="every stack's baked images, not only --stack's")
    parser.add_argument("--delete", action="store_true", help="delete the images and their snapshots")
    parser.add_argument(
        "--after-up",
        choices=("ok", "failed"),
        help="after make's pulumi up (ok or failed): delete or name the bake builders left in --stack's state",
    )
    parser.add_argument("--yes", action="store_true", help="with --after-up: the second up without a prompt")
    args = parser.parse_args(argv)
    if args.after_up:
        return after_up(args.stack, args.after_up == "failed", yes=args.yes)
    from tools import harness

    try:
        region = args.region or stack_region(args.stack)
    except (harness.StackFileError, FileNotFoundError, harness.ConfigTypeError) as err:
        print(f"baked-images: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    creds = credentials_from_env(env)
    if creds is None:
        print("baked-images: no credentials: export ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY", file=sys.stderr)
        return 2
    try:
        api = api_factory(region, creds)
        tags = BAKE_TAG if args.all else {**BAKE_TAG, "gpu-k8s-baked-by-stack": args.stack}
        images = api.own_images(tags)
        if not images:
            print(f"no baked gpu-k8s images in {region}" + ("" if args.all else f" from stack {args.stack}"))
            return 0
        for image in images:
            monthly = SNAPSHOT_CNY_PER_GB_MONTH * image.size_gib
            print(f"{image.image_id}  {image.name}  {image.created}  disk {image.size_gib} GiB, at most {monthly} CNY/month")
            if args.delete:
                api.delete_image(image, tags)
                print(f"  deleted, with snapshots {', '.join(image.snapshot_ids) or '(none)'}")
    except ImportError as err:
        print(f"baked-images: the Aliyun SDK is not installed ({err.name}): make install", file=sys.stderr)
        return 2
    except PreflightError as err:
        print(str(err).replace("preflight:", "baked-images:", 1), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
