"""The node images gpu-k8s:nodeImage bake made, kept after `make down`: list them, or delete them.

    python -m tools.baked_images --region cn-hangzhou --stack dev [--all] [--delete]
                                               (make baked-images / make delete-images [ALL=yes])
    pulumi stack export -s dev | python -m tools.baked_images --builders-in-state   (make up)

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
import sys
from collections.abc import Mapping

from components.aliyun.ecs_api import EcsApi, PreflightError, credentials_from_env
from components.kubeadm.bake import SNAPSHOT_CNY_PER_GB_MONTH

BAKE_TAG = {"gpu-k8s-bake": "1"}
BUILDER_TYPE = "alicloud:ecs/instance:Instance"


def builders_in_state(export: object) -> list[str]:
    """The bake builders a `pulumi stack export` still holds (pure).

    A builder stays after the `up` that baked with it: that `up` cannot know the image exists
    when it starts, so the next `up` (which finds it) deletes the builder. Until then it bills
    as a GPU node, at most until its own auto-release: `make up` runs that next `up` at once.
    """
    deployment = export.get("deployment") if isinstance(export, dict) else None
    resources = (deployment or {}).get("resources") or []
    return sorted(
        r["urn"].rsplit("::", 1)[-1]
        for r in resources
        if isinstance(r, dict) and r.get("type") == BUILDER_TYPE and r.get("urn", "").rsplit("::", 1)[-1].startswith("bake-")
    )


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None, api_factory=EcsApi) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.baked_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--region", help="the stack's alicloud:region, e.g. cn-hangzhou")
    parser.add_argument("--stack", help="the stack whose bakes to list or delete")
    parser.add_argument("--all", action="store_true", help="every stack's baked images, not only --stack's")
    parser.add_argument("--delete", action="store_true", help="delete the images and their snapshots")
    parser.add_argument(
        "--builders-in-state",
        action="store_true",
        help="read `pulumi stack export` on stdin and print the bake builders it holds (make up)",
    )
    args = parser.parse_args(argv)
    if args.builders_in_state:
        try:
            export = json.load(sys.stdin)
        except json.JSONDecodeError:
            return 0  # no stack or no state: no builder to delete
        print("\n".join(builders_in_state(export)))
        return 0
    if not args.region or not args.stack:
        parser.error("--region and --stack are required")
    creds = credentials_from_env(env)
    if creds is None:
        print("baked-images: no credentials: export ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY", file=sys.stderr)
        return 2
    try:
        api = api_factory(args.region, creds)
        tags = BAKE_TAG if args.all else {**BAKE_TAG, "gpu-k8s-baked-by-stack": args.stack}
        images = api.own_images(tags)
        if not images:
            print(f"no baked gpu-k8s images in {args.region}" + ("" if args.all else f" from stack {args.stack}"))
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
