"""What the stack costs per hour and at most before auto-release.

At deploy time the price comes from Aliyun (get_instance_types sorted by price, which
fills `price`); offline the mocks return none, so the catalog's dated list price or
gpu-k8s:hourlyPriceCny is used and the result says it is an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pulumi_alicloud as alicloud

from components import catalog


@dataclass(frozen=True)
class NodePrice:
    node: str
    pool: str
    instance_type: str
    hourly_cny: Decimal | None
    source: str  # "aliyun" | "list price: ..." | "gpu-k8s:hourlyPriceCny" | "unknown"


def aliyun_price(instance_type: str, spot: bool) -> Decimal | None:
    """Hourly pay-as-you-go (or spot) price from the ECS API; None when it gives none."""
    result = alicloud.ecs.get_instance_types(
        instance_type=instance_type,
        instance_charge_type="PostPaid",
        spot_strategy="SpotAsPriceGo" if spot else "NoSpot",
        sorted_by="Price",
    )
    for itype in result.instance_types or []:
        if itype.id == instance_type and itype.price:
            return Decimal(itype.price)
    return None


def node_price(
    node: str,
    pool: str,
    instance_type: str,
    *,
    live: Decimal | None,
    pool_override: Decimal | None,
    stack_override: Decimal | None,
    list_price: tuple[Decimal, str] | None,
) -> NodePrice:
    """Pick the best price we have (Aliyun > pool override > catalog list > stack fallback) and say which."""
    if live is not None:
        return NodePrice(node, pool, instance_type, live, "aliyun")
    if pool_override is not None:
        return NodePrice(node, pool, instance_type, pool_override, "estimate: nodePools hourlyPriceCny")
    if list_price is not None:
        return NodePrice(node, pool, instance_type, list_price[0], f"estimate: {list_price[1]}")
    if stack_override is not None:
        return NodePrice(node, pool, instance_type, stack_override, "estimate: gpu-k8s:hourlyPriceCny")
    return NodePrice(node, pool, instance_type, None, "unknown offline: set gpu-k8s:hourlyPriceCny")


def summarize(prices: list[NodePrice], ttl_hours: Decimal) -> dict:
    """The `cost` stack output."""
    known = [p.hourly_cny for p in prices if p.hourly_cny is not None]
    complete = len(known) == len(prices)
    hourly = sum(known, Decimal(0))
    estimate = any(p.source != "aliyun" for p in prices)
    # Name every type without a price, so "at least" says what it leaves out.
    unknown = ", ".join(dict.fromkeys(p.instance_type for p in prices if p.hourly_cny is None))
    summary: dict = {
        "currency": "CNY",
        "estimate": estimate,
        "perNode": [
            {
                "node": p.node,
                "pool": p.pool,
                "instanceType": p.instance_type,
                "hourly": _money(p.hourly_cny),
                "source": p.source,
            }
            for p in prices
        ],
        "hourlyTotal": _money(hourly) if complete else f"at least {_money(hourly)}, prices unknown for {unknown}",
        "ttlHours": float(ttl_hours),
    }
    if ttl_hours == 0:
        summary["maxBeforeAutoRelease"] = "unbounded: auto-release is off (ttlHours 0)"
    else:
        most = _money(hourly * ttl_hours)
        summary["maxBeforeAutoRelease"] = most if complete else f"at least {most}, prices unknown for {unknown}"
    return summary


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.01'))}"


def stack_cost(cfg, fleet) -> dict:
    """Price every node of the fleet (one Aliyun lookup per instance type)."""
    pool_prices = {p.name: p.hourly_price_cny for p in cfg.pools}
    live: dict[str, Decimal | None] = {}
    prices = []
    for node in fleet.nodes:
        itype = node.args.instance_type
        if itype not in live:
            live[itype] = aliyun_price(itype, cfg.spot)
        list_price = catalog.LIST_PRICES.get(itype)
        prices.append(
            node_price(
                node.hostname,
                node.args.pool,
                itype,
                live=live[itype],
                pool_override=pool_prices.get(node.args.pool),
                stack_override=cfg.hourly_price_cny,
                list_price=list_price,
            )
        )
    return summarize(prices, cfg.ttl_hours)
