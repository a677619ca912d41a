"""What the stack costs per hour and at most before auto-release.

At deploy time (`pulumi preview`/`up`) with ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY set and
the Aliyun SDK installed (requirements-dev.txt), each type's price is DescribePrice's answer,
through the same code as `make preflight` (components/aliyun/ecs_api.py): instance + system disk per
hour. Any failure there (no SDK, no keys, an API error) is a warning, never a failed run,
and the price falls back to get_instance_types (which fills `price`), then to the catalog's
dated list price or gpu-k8s:hourlyPriceCny; each node's `source` says which one it got.
`pulumi destroy` does not run the program, so none of this can block it. The offline plan
(tools/harness.py) turns the live lookup off: it never calls the network, keys or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pulumi
import pulumi_alicloud as alicloud

from components.aliyun import ecs_api
from components.facts import ack as ack_facts
from components.facts import catalog

# Ask DescribePrice when credentials are present; the offline harness sets this False.
LIVE_PRICE_LOOKUP = True
DESCRIBE_PRICE_SOURCE = "aliyun DescribePrice: instance + system disk per hour (traffic billed per GB)"


@dataclass(frozen=True)
class NodePrice:
    node: str
    pool: str
    instance_type: str
    hourly_cny: Decimal | None
    source: str  # DESCRIBE_PRICE_SOURCE | "aliyun" | "estimate: ..." | "unknown ..."


def described_prices(cfg) -> dict[str, Decimal]:
    """DescribePrice per instance type (components/aliyun/ecs_api.py), or {} when it cannot answer (says why)."""
    if not LIVE_PRICE_LOOKUP:
        return {}
    creds = ecs_api.credentials_from_env()
    if creds is None:
        return {}
    try:
        api = ecs_api.EcsApi(cfg.region, creds)
        return {
            itype: api.price(itype, cfg.system_disk_gib, cfg.public_bandwidth_mbps, cfg.spot).total
            for itype in cfg.instance_types
        }
    except ImportError:
        return {}  # the SDK is a dev requirement: without it, get_instance_types answers
    except Exception as err:  # noqa: BLE001 - a price lookup never fails the run
        pulumi.log.warn(f"cost: DescribePrice gave no price ({' '.join(str(err).split())}); using get_instance_types")
        return {}


def aliyun_price(instance_type: str, spot: bool) -> tuple[Decimal | None, str]:
    """(hourly price, "") from get_instance_types, or (None, why not). Never raises: the provider
    asks the billing API (BSS GetPayAsYouGoPrice) and fails the call when it cannot (no
    bssapi:GetPayAsYouGoPrice permission, an outage); a price lookup must not fail `up`."""
    try:
        result = alicloud.ecs.get_instance_types(
            instance_type=instance_type,
            instance_charge_type="PostPaid",
            spot_strategy="SpotAsPriceGo" if spot else "NoSpot",
            sorted_by="Price",
        )
    except Exception as err:  # noqa: BLE001 - any failure is "unknown", with the reason
        reason = " ".join(str(err).split())[:160]
        pulumi.log.warn(
            f"cost: get_instance_types gave no price for {instance_type} ({reason}); it needs the billing API "
            "(bssapi:GetPayAsYouGoPrice, e.g. AliyunBSSReadOnlyAccess). The price shows as unknown; `up` goes on."
        )
        return None, f"get_instance_types failed: {reason}"
    for itype in result.instance_types or []:
        if itype.id == instance_type and itype.price:
            return Decimal(itype.price), ""
    return None, "get_instance_types gave no price"


def node_price(
    node: str,
    pool: str,
    instance_type: str,
    *,
    live: Decimal | None,
    described: Decimal | None = None,
    pool_override: Decimal | None,
    stack_override: Decimal | None,
    list_price: tuple[Decimal, str] | None,
    spot: bool = False,
    why_unknown: str = "",
) -> NodePrice:
    """Pick the best price we have (DescribePrice > get_instance_types > pool override > catalog list >
    stack fallback) and say which."""
    # A spot node pays the market price: only DescribePrice (SpotStrategy) answers for spot;
    # every other figure is the on-demand price, labelled so (an upper bound for spot).
    on_demand = " (on-demand price; a spot node pays the market price, usually less)" if spot else ""
    if described is not None:
        return NodePrice(node, pool, instance_type, described, DESCRIBE_PRICE_SOURCE + (" (spot)" if spot else ""))
    if live is not None:
        return NodePrice(node, pool, instance_type, live, "aliyun list price (get_instance_types)" + on_demand)
    if pool_override is not None:
        return NodePrice(node, pool, instance_type, pool_override, "estimate: nodePools hourlyPriceCny")
    if list_price is not None:
        return NodePrice(node, pool, instance_type, list_price[0], f"estimate: {list_price[1]}{on_demand}")
    if stack_override is not None:
        return NodePrice(node, pool, instance_type, stack_override, "estimate: gpu-k8s:hourlyPriceCny")
    why = f" ({why_unknown})" if why_unknown else ""
    return NodePrice(node, pool, instance_type, None, f"unknown{why}: set gpu-k8s:hourlyPriceCny or the pool's hourlyPriceCny")


def summarize(prices: list[NodePrice], ttl_hours: Decimal) -> dict:
    """The `cost` stack output."""
    known = [p.hourly_cny for p in prices if p.hourly_cny is not None]
    complete = len(known) == len(prices)
    hourly = sum(known, Decimal(0))
    estimate = any(not p.source.startswith("aliyun") for p in prices)
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


def _price_nodes(cfg, nodes: list[tuple[str, str, str]]) -> list[NodePrice]:
    """Price (hostname, pool, instance type) nodes: one Aliyun lookup per instance type."""
    pool_prices = {p.name: p.hourly_price_cny for p in cfg.pools}
    described = described_prices(cfg)
    live: dict[str, tuple[Decimal | None, str]] = {}
    prices = []
    for host, pool, itype in nodes:
        if itype not in live and itype not in described:
            live[itype] = aliyun_price(itype, cfg.spot)
        price, why = live.get(itype, (None, ""))
        prices.append(
            node_price(
                host,
                pool,
                itype,
                live=price,
                described=described.get(itype),
                pool_override=pool_prices.get(pool),
                stack_override=cfg.hourly_price_cny,
                list_price=catalog.LIST_PRICES.get(itype),
                spot=cfg.spot,
                why_unknown=why if LIVE_PRICE_LOOKUP else "offline: no price list",
            )
        )
    return prices


def stack_cost(cfg, fleet) -> dict:
    """Price every node of the fleet (kubeadm: the instances are all that bills per hour)."""
    return summarize(_price_nodes(cfg, [(n.hostname, n.args.pool, n.args.instance_type) for n in fleet.nodes]), cfg.ttl_hours)


def ack_cost(cfg, fees: dict[str, tuple[Decimal, str]], nat_gateways: list[str] | tuple[str, ...] = ()) -> dict:
    """ACK: the node pools' nodes, plus the cluster's own hourly fees, which the TTL does not stop.

    ``nat_gateways``: the NAT gateways found in the stack's VPC after the cluster exists (ACK
    made them: components/facts/ack.py NAT_GATEWAY_FEE); each is priced with its EIP. At the TTL
    the node pools are set to zero, best-effort (components/ack/backend.py); the fees bill until
    `make down`: the output says both.
    """
    nodes = [(host, p.name, p.instance_type) for p in cfg.pools for host in p.node_names()]
    summary = summarize(_price_nodes(cfg, nodes), cfg.ttl_hours)
    fees = dict(fees)
    item, price, source = ack_facts.NAT_GATEWAY_FEE
    for nat in nat_gateways:
        fees[f"{item} ({nat})"] = (price, source)
    fee_total = sum((price for price, _ in fees.values()), Decimal(0))
    summary["clusterFees"] = [
        {"item": item, "hourly": str(price), "source": f"estimate: {source}"} for item, (price, source) in fees.items()
    ]
    summary["natGateway"] = (
        f"{', '.join(nat_gateways)}: made by ACK, priced above, deleted with the cluster by `make down`"
        if nat_gateways
        else "none in the stack's VPC (looked up after the cluster was created)"
    )
    summary["estimate"] = True  # the fees are list estimates (components/facts/ack.py)
    nodes_hourly = summary["hourlyTotal"]
    if nodes_hourly.startswith("at least"):
        summary["hourlyTotal"] = f"{nodes_hourly} for the nodes, plus at least {_money(fee_total)} cluster fees"
    else:
        # The load balancer's capacity units and traffic are billed by use: a lower bound.
        summary["hourlyTotal"] = f"at least {_money(Decimal(nodes_hourly) + fee_total)}"
    summary["afterAutoRelease"] = (
        f"at least {_money(fee_total)} per hour until `make down` (if the best-effort TTL has set the node pools "
        "to 0; the cluster, its load balancer and EIPs remain)"
    )
    if cfg.ttl_hours != 0:
        summary["maxBeforeAutoRelease"] = (
            f"{summary['maxBeforeAutoRelease']} for the nodes if the best-effort TTL works (`make down` is sure), "
            f"plus at least {_money(fee_total)} per hour for the cluster until `make down`"
        )
    else:
        summary["maxBeforeAutoRelease"] = "unbounded: ttlHours 0, the node pools never scale to zero"
    return summary
