"""Preflight: real stock and real prices from Aliyun's ECS API, before anything is created.

    python -m tools.preflight --stack dev        (make preflight [STACK=dev])

Reads the stack's config exactly as the offline plan does (tools/harness.effective_config,
then components/config/loader.py's rules), the credentials `pulumi up` uses
(ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY, and ALICLOUD_SECURITY_TOKEN if set), and asks
the ECS API (2014-05-26) through Aliyun's official SDK (alibabacloud-ecs20140526, which
signs the requests; nothing hand-rolled), per instance type of the stack:

DescribeAvailableResource (stock per zone), DescribePrice (the hourly price) and, on spot
stacks, DescribeSpotPriceHistory: components/aliyun/ecs_api.py has the arguments and sources.

Exit 0: the table. Exit 2, one line: no credentials, wrong credentials, a region the
account cannot use, throttling after bounded retries, a config error, or a type with no
stock in any zone of the region. The client is components/aliyun/ecs_api.py; its SDK is a
dev requirement (requirements-dev.txt): `pulumi up` does not need it, and
components/aliyun/cost.py uses it only when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal

from components.aliyun.ecs_api import (
    ENV_ACCESS_KEY,
    ENV_SECRET_KEY,
    LOW_STOCK,
    EcsApi,
    PreflightError,
    TypeReport,
    common_zones,
    credentials_from_env,
    spot_range,
)
from components.aliyun.node import SYSTEM_DISK_CATEGORY

# --- the stack -------------------------------------------------------------------------------


def nodes_per_type(cfg) -> dict[str, int]:
    """How many instances of each type the stack creates (a dedicated control plane included)."""
    counts: dict[str, int] = {}
    if cfg.control_plane_instance_type:
        counts[cfg.control_plane_instance_type] = 1
    for pool in cfg.pools:
        if pool.count:
            counts[pool.instance_type] = counts.get(pool.instance_type, 0) + pool.count
    return counts


def load_stack(stack: str):
    """The StackConfig `pulumi up` would see: the plan's config merge, then load_config's rules."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    from components.config import load_config
    from components.facts import ack as ack_facts
    from tools import harness

    cfg = harness.effective_config(stack)
    saved = runtime_config.CONFIG.get(), runtime_config._SECRET_KEYS.get()  # noqa: SLF001
    saved_tool_check = ack_facts.CHECK_DEPLOYER_TOOLS
    ack_facts.CHECK_DEPLOYER_TOOLS = False  # kubectl on this machine matters to `up`, not to prices
    # load_config wraps the secret gridDriverUrl in an Output, which wants an event loop.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi.runtime.set_all_config(cfg, [k for k in cfg if k.endswith(":gridDriverUrl")])
        # load_config's warnings (registry mirrors, unverified downloads) belong to the plan, not here.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            return dataclasses.replace(load_config(), stack=stack)  # outside an engine, get_stack() is "stack"
    finally:
        runtime_config.CONFIG.set(saved[0])
        runtime_config._SECRET_KEYS.set(saved[1])  # noqa: SLF001
        ack_facts.CHECK_DEPLOYER_TOOLS = saved_tool_check
        loop.close()
        asyncio.set_event_loop(None)


def check(cfg, api: EcsApi, now: datetime | None = None) -> list[TypeReport]:
    now = now or datetime.now(UTC)
    reports = []
    for itype, count in nodes_per_type(cfg).items():
        zones = api.zones(itype, cfg.spot)
        price = api.price(itype, cfg.system_disk_gib, cfg.public_bandwidth_mbps, cfg.spot)
        spot = None
        if cfg.spot:
            spot = spot_range({z.zone: api.spot_history(itype, z.zone, now) for z in zones if z.has_stock})
        reports.append(TypeReport(itype, count, zones, price, spot))
    return reports


def no_stock(reports: list[TypeReport], region: str) -> str | None:
    """One line naming the first type with no stock in any zone of the region, else None."""
    for report in reports:
        if not any(z.has_stock for z in report.zones):
            listed = ", ".join(f"{z.zone} {z.category}" for z in report.zones) or "no zone lists it"
            return (
                f"preflight: {report.instance_type} has no stock in any zone of {region} "
                f"(DescribeAvailableResource: {listed}); try another region (alicloud:region) or type"
            )
    return None


def totals(reports: list[TypeReport], ttl_hours: Decimal) -> tuple[Decimal, Decimal | None]:
    """Stack per hour (every node) and the most before auto-release (None: auto-release off)."""
    hourly = sum((r.price.total * r.nodes for r in reports), Decimal(0))
    return hourly, (hourly * ttl_hours if ttl_hours else None)


def ack_fees(cfg) -> list[tuple[str, Decimal]]:
    """On ACK, the cluster's hourly fees beside the nodes, a NAT gateway ACK may make included
    (its CreateCluster default decides: components/facts/ack.py); none on kubeadm."""
    if cfg.ack is None:
        return []
    from components.facts import ack as ack_facts

    item, price, _ = ack_facts.NAT_GATEWAY_FEE
    fees = [(name, fee) for name, (fee, _) in ack_facts.cluster_fees(cfg.ack.cluster_spec).items()]
    return [*fees, (f"{item}, if ACK makes one (`make outputs` cost.natGateway says)", price)]


def _money(value: Decimal | None) -> str:
    return "-" if value is None else f"{value.quantize(Decimal('0.001')).normalize():f}"


def render(cfg, reports: list[TypeReport]) -> str:
    currency = reports[0].price.currency if reports else "CNY"
    header = ("type", "nodes", "zones with stock", f"{currency}/h each", "instance", "disk", "spot now (zone)", "spot 3 days")
    rows = []
    for r in reports:
        stocked = [z.zone + (" (low)" if z.category == LOW_STOCK else "") for z in r.zones if z.has_stock]
        spot_now = f"{_money(r.spot.now)} ({r.spot.zone})" if r.spot else ("no history" if cfg.spot else "-")
        spot_range_text = f"{_money(r.spot.low)}..{_money(r.spot.high)}" if r.spot else "-"
        rows.append(
            (
                r.instance_type,
                str(r.nodes),
                ", ".join(stocked) or "none",
                _money(r.price.total),
                _money(r.price.instance),
                _money(r.price.system_disk),
                spot_now,
                spot_range_text,
            )
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"preflight {cfg.stack} ({cfg.region}, {'spot' if cfg.spot else 'pay-as-you-go'}), from Aliyun's ECS API:"]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    hourly, most = totals(reports, cfg.ttl_hours)
    ttl = f"{cfg.ttl_hours.normalize():f}"
    fees = ack_fees(cfg)
    if fees and currency != "CNY":
        # The fees are CNY list prices; an international account's DescribePrice answers in USD.
        listed = ", ".join(f"{item} {_money(price)}" for item, price in fees)
        lines.append(f"  ACK fees in CNY per hour, not added to the {currency} total: {listed}")
        fees = []
    if fees:
        fee_total = sum((price for _, price in fees), Decimal(0))
        lines.append("  ACK fees per hour, beside the nodes (dated list estimates, components/facts/ack.py; not from the API):")
        lines += [f"    {item}: {_money(price)} {currency}/h" for item, price in fees]
        lines.append(
            f"  stack total: {_money(hourly + fee_total)} {currency}/h = nodes {_money(hourly)} (DescribePrice TradePrice "
            f"x nodes) + ACK fees {_money(fee_total)} (capacity units and traffic billed by use, not included)"
        )
        lines.append(
            f"  most before auto-release: {_money(most)} {currency} for the nodes (after ttlHours {ttl} h; BEST-EFFORT on ACK), "
            f"plus {_money(fee_total)} {currency}/h for the cluster until `make down`"
            if most is not None
            else "  most before auto-release: unbounded (ttlHours 0: the node pools never scale to zero)"
        )
    else:
        lines.append(f"  stack total: {_money(hourly)} {currency}/h (DescribePrice TradePrice x nodes)")
        lines.append(
            f"  most before auto-release: {_money(most)} {currency} (after ttlHours {ttl} h)"
            if most is not None
            else "  most before auto-release: unbounded (ttlHours 0: auto-release off)"
        )
    lines.append(
        f"  price: instance + {cfg.system_disk_gib} GiB {SYSTEM_DISK_CATEGORY} system disk per hour; "
        f"public bandwidth up to {cfg.public_bandwidth_mbps} Mbit/s is billed by traffic (per GB), not per hour"
    )
    zones = common_zones(reports)
    lines.append(f"  zones with stock for every type: {', '.join(zones) or 'none'}")
    if getattr(cfg, "node_image", "stock") == "bake" and cfg.ack is None:
        from components.kubeadm import bake

        targets = ", ".join(bake.bake_targets(cfg.pools))
        most = bake.SNAPSHOT_CNY_PER_GB_MONTH * cfg.system_disk_gib
        lines.append(
            f"  baked node images ({targets}): at most {_money(most)} CNY/month each in snapshot storage "
            f"(CNY {bake.SNAPSHOT_CNY_PER_GB_MONTH}/GB-month x {cfg.system_disk_gib} GB; kept after make down; "
            "make delete-images); each bake's builder bills as one node until the up after the bake deletes it "
            "(make up runs that up)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None, api_factory=EcsApi) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preflight", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    args = parser.parse_args(argv)
    from components.config import ConfigError
    from tools import harness

    try:
        cfg = load_stack(args.stack)
    except harness.StackFileError as err:  # one line, as the plan prints it
        print(f"preflight: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, harness.ConfigTypeError, ConfigError) as err:
        print(f"preflight: config error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    creds = credentials_from_env(env)
    if creds is None:
        print(
            f"preflight: no credentials: export {ENV_ACCESS_KEY} and {ENV_SECRET_KEY} (as for `pulumi up`); "
            "`make plan` needs none",
            file=sys.stderr,
        )
        return 2
    try:
        api = api_factory(cfg.region, creds)
    except ImportError as err:
        print(f"preflight: the Aliyun SDK is not installed ({err.name}): make install", file=sys.stderr)
        return 2
    try:
        reports = check(cfg, api)
    except PreflightError as err:
        print(str(err), file=sys.stderr)
        return 2
    print(render(cfg, reports))
    reason = no_stock(reports, cfg.region)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
