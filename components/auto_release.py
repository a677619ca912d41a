"""Auto-release: the instances' ECS auto_release_time, stable across `pulumi up` runs.

The release time is anchored to a timestamp taken once, by a local command that
re-runs only when ttlHours changes (its trigger). The program itself never reads the
wall clock, so a second `pulumi up` with the same config shows no diff; changing
ttlHours re-anchors it to "now + new TTL".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pulumi
import pulumi_command as command

from components.config import MAX_TTL_HOURS, MIN_TTL_HOURS

# The ECS API wants the time at least 30 minutes ahead; leave room for the create call.
_MIN_LEAD = timedelta(minutes=30)


def release_time(anchor_epoch: int, ttl_hours: Decimal) -> str:
    """UTC yyyy-MM-ddTHH:mm:00Z, anchor + TTL, rounded up to the whole minute."""
    anchor = datetime.fromtimestamp(anchor_epoch, tz=UTC)
    ttl = timedelta(seconds=float(ttl_hours) * 3600)
    when = anchor + max(ttl, _MIN_LEAD)
    when = when.replace(second=0, microsecond=0) + timedelta(minutes=1 if when.second or when.microsecond else 0)
    return when.strftime("%Y-%m-%dT%H:%M:00Z")


@dataclass(frozen=True, kw_only=True)
class AutoReleaseArgs:
    ttl_hours: Decimal

    def __post_init__(self):
        if self.ttl_hours != 0 and not MIN_TTL_HOURS <= self.ttl_hours <= MAX_TTL_HOURS:
            raise ValueError(f"ttl_hours must be 0 or {MIN_TTL_HOURS}..{MAX_TTL_HOURS}")


class AutoRelease(pulumi.ComponentResource):
    release_time: pulumi.Output[str] | None  # None when auto-release is off

    def __init__(self, name: str, args: AutoReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:auto_release:AutoRelease", name, {}, opts)
        self.release_time = None
        if args.ttl_hours == 0:
            pulumi.log.warn("gpu-k8s:ttlHours is 0: auto-release is OFF. The instances bill until `make down`.", self)
        else:
            anchor = command.local.Command(
                f"{name}-anchor",
                create="date -u +%s",
                triggers=[str(args.ttl_hours)],
                opts=pulumi.ResourceOptions(parent=self),
            )
            ttl = args.ttl_hours
            self.release_time = anchor.stdout.apply(lambda out: release_time(int(out.strip()), ttl))
        self.register_outputs({"releaseTime": self.release_time or "off"})
