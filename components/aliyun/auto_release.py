"""Auto-release: each node's ECS auto_release_time, valid when that node is created.

Every node has its own anchor, a timestamp taken by a local command before its
instance is created (the instance's release time flows from it). An anchor re-runs
only when its triggers change: ttlHours, or an instance input that replaces the
instance (spot strategy, price limit, disk category: ForceNew, replacement-semantics.md
§1.2). So:

- a second `pulumi up` with the same config shows no diff (the program never reads
  the clock; each anchor keeps its stored stdout);
- a node added hours later gets a fresh anchor of its own, so its time is at least
  the API's 30 minutes (plus a margin) ahead when RunInstances is called;
- `make extend` replaces every anchor (``--replace``, URNs from the offline plan), and
  changing ttlHours re-anchors every node to "now + new TTL";
- `make replace-node NODE=<hostname>` replaces a node's instance together with its anchor.

The anchors are direct children of this component (one level below the stack), so
the offline plan prints the same URNs the engine uses. In a preview of a re-anchoring
run (`make extend`, a ttlHours change) the anchors' stdout is unknown, so every
instance shows an ``auto_release_time`` update whose value is computed at apply time.
A node whose creation fails and is retried hours later keeps the anchor of the first
try (same inputs, §2): RunInstances then refuses the old time; `make extend` fixes it.

ECS rules (ModifyInstanceAutoReleaseTime API doc; replacement-semantics.md §1.3): the
time is yyyy-MM-ddTHH:mm:ssZ in UTC, at least 30 minutes and at most 3 years ahead.
The provider suppresses a diff when the new time starts with
``strings.Trim(old, ":00Z")``, which strips *characters*, so an old time on a minute
ending in 0 (e.g. ``10:30:00Z`` -> ``10:3``) would hide a move to any time 10:30-10:39
(``…T10:00:00Z`` -> ``…T1`` hides 10:00-19:59). ``release_time`` therefore never
returns a minute ending in 0, and a real move is never suppressed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pulumi
import pulumi_command as command

from components.config import DNS_LABEL_RE, MAX_TTL_HOURS, MIN_TTL_HOURS

# The API minimum lead, and the margin kept above it for the time between the anchor
# and RunInstances (the shortest ttlHours, MIN_TTL_HOURS, is their sum).
API_MIN_LEAD = timedelta(minutes=30)
MARGIN = timedelta(minutes=15)


def release_time(anchor_epoch: int, ttl_hours: Decimal) -> str:
    """UTC yyyy-MM-ddTHH:mm:00Z: anchor + TTL (at least 45 min), rounded up to a minute not ending in 0."""
    anchor = datetime.fromtimestamp(anchor_epoch, tz=UTC)
    ttl = timedelta(seconds=float(ttl_hours) * 3600)
    when = anchor + max(ttl, API_MIN_LEAD + MARGIN)
    when = when.replace(second=0, microsecond=0) + timedelta(minutes=1 if when.second or when.microsecond else 0)
    if when.minute % 10 == 0:  # the provider's diff suppression (module docstring)
        when += timedelta(minutes=1)
    return when.strftime("%Y-%m-%dT%H:%M:00Z")


@dataclass(frozen=True, kw_only=True)
class AutoReleaseArgs:
    ttl_hours: Decimal  # 0: auto-release off (no anchors)
    hostnames: tuple[str, ...] = ()
    # Instance inputs whose change replaces every instance: the new ones need new anchors.
    replace_triggers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.ttl_hours != 0 and not MIN_TTL_HOURS <= self.ttl_hours <= MAX_TTL_HOURS:
            raise ValueError(f"ttl_hours must be 0 or {MIN_TTL_HOURS}..{MAX_TTL_HOURS}")
        bad = [h for h in self.hostnames if not DNS_LABEL_RE.match(h)]
        if bad or len(set(self.hostnames)) != len(self.hostnames):
            raise ValueError(f"AutoReleaseArgs.hostnames must be distinct DNS labels (got {list(self.hostnames)})")


class AutoRelease(pulumi.ComponentResource):
    anchors: dict[str, command.local.Command]
    release_times: dict[str, pulumi.Output[str]]  # per hostname; empty when auto-release is off
    earliest: pulumi.Output[str] | None  # when the first instance goes; None when off

    def __init__(self, name: str, args: AutoReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("gpu-k8s:auto_release:AutoRelease", name, {}, opts)
        self.anchors, self.release_times, self.earliest = {}, {}, None
        if args.ttl_hours == 0:
            pulumi.log.warn("gpu-k8s:ttlHours is 0: auto-release is OFF. The instances bill until `make down`.", self)
        else:
            ttl = args.ttl_hours
            for host in args.hostnames:
                self.anchors[host] = command.local.Command(
                    f"{host}-ttl-anchor",
                    create="date -u +%s",
                    triggers=[str(ttl), *args.replace_triggers],
                    opts=pulumi.ResourceOptions(parent=self),
                )
                self.release_times[host] = self.anchors[host].stdout.apply(lambda out: release_time(int(out.strip()), ttl))
            if self.release_times:
                self.earliest = pulumi.Output.all(*self.release_times.values()).apply(min)
        self.register_outputs({"releaseTimes": self.release_times, "earliest": self.earliest or "off"})
