"""Aliyun's ECS API (2014-05-26) through Aliyun's official SDK: stock per zone, hourly prices, spot history.

Three calls, each with bounded retries on throttling, and their answers as plain facts:

- DescribeAvailableResource (DestinationResource=InstanceType, SystemDiskCategory=cloud_essd):
  zones with stock (zone Available and the type WithStock; ClosedWithStock is "low");
- DescribePrice (ResourceType=instance, PriceUnit=Hour, the stack's system disk and
  bandwidth, InternetChargeType=PayByTraffic, SpotStrategy=SpotAsPriceGo where spot):
  the hourly price, instance and system disk; traffic is billed per GB, not per hour;
- DescribeSpotPriceHistory (spot stacks, each zone with stock, the last 3 days): now, min, max.

API reference: https://help.aliyun.com/document_detail/66186.html (DescribeAvailableResource),
https://api.aliyun.com/document/Ecs/2014-05-26/DescribePrice,
https://www.alibabacloud.com/help/tc/ecs/api-describespotpricehistory.

Used at deploy time by components/aliyun/network.py (the zone with stock for every type) and
components/aliyun/cost.py (the real price), and by `make preflight` (tools/preflight.py). The
SDK (alibabacloud-ecs20140526) is optional: it is imported inside the client, and `pulumi up`
without it (or without credentials) falls back to what the program knows offline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from components.aliyun.node import SYSTEM_DISK_CATEGORY

ENV_ACCESS_KEY = "ALICLOUD_ACCESS_KEY"
ENV_SECRET_KEY = "ALICLOUD_SECRET_KEY"
ENV_SECURITY_TOKEN = "ALICLOUD_SECURITY_TOKEN"
SPOT_HISTORY_DAYS = 3
# Throttling: bounded retries with exponential back-off (1 s, 2 s, 4 s), then one line.
THROTTLE_ATTEMPTS = 4
THROTTLE_FIRST_DELAY_S = 1.0
# Error codes (Aliyun's common error codes for every API: https://api.aliyun.com/document
# "Common error codes"; the ECS API reference lists InvalidRegionId.NotFound per operation).
CREDENTIAL_CODES = (
    "InvalidAccessKeyId.NotFound",
    "InvalidAccessKeyId.Inactive",
    "SignatureDoesNotMatch",
    "InvalidSecurityToken.Expired",
    "InvalidSecurityToken.Malformed",
    "InvalidSecurityToken.MismatchWithAccessKey",
)
REGION_CODES = ("InvalidRegionId.NotFound", "InvalidRegionId.MalFormed", "InvalidRegionId", "Forbidden.RegionId")
WITH_STOCK = "WithStock"
LOW_STOCK = "ClosedWithStock"


class PreflightError(Exception):
    """A one-line reason the ECS API cannot answer (make preflight: exit 2; pulumi up: the price or stock is unknown)."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    security_token: str | None = None


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """The keys `pulumi up` uses (the alicloud provider's environment variables), or None."""
    env = os.environ if env is None else env
    key, secret = env.get(ENV_ACCESS_KEY, ""), env.get(ENV_SECRET_KEY, "")
    if not key or not secret:
        return None
    return Credentials(key, secret, env.get(ENV_SECURITY_TOKEN) or None)


@dataclass(frozen=True)
class ZoneStock:
    zone: str
    category: str  # WithStock | ClosedWithStock | WithoutStock | ClosedWithoutStock | SoldOut

    @property
    def has_stock(self) -> bool:
        return self.category in (WITH_STOCK, LOW_STOCK)


@dataclass(frozen=True)
class HourlyPrice:
    """DescribePrice's answer for one instance of a type, per hour (TradePrice: after discounts)."""

    total: Decimal  # instance + system disk (+ bandwidth, 0 per hour when billed by traffic)
    instance: Decimal | None
    system_disk: Decimal | None
    currency: str


@dataclass(frozen=True)
class SpotRange:
    now: Decimal
    low: Decimal
    high: Decimal
    zone: str  # where `now` is the cheapest


@dataclass(frozen=True)
class TypeReport:
    instance_type: str
    nodes: int
    zones: tuple[ZoneStock, ...]
    price: HourlyPrice
    spot: SpotRange | None


# --- the API, through the SDK -------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    # The SDK parses JSON numbers as floats: str() gives back the decimal text Aliyun sent.
    return None if value is None or value == "" else Decimal(str(value))


def _code(err: Exception) -> str:
    return str(getattr(err, "code", "") or "")


def explain(err: Exception, region: str, operation: str) -> PreflightError:
    """One line for an SDK error (no traceback)."""
    code = _code(err)
    if code in CREDENTIAL_CODES:
        return PreflightError(
            f"preflight: Aliyun refused the credentials ({code}): check {ENV_ACCESS_KEY} / {ENV_SECRET_KEY}"
            + (f" / {ENV_SECURITY_TOKEN}" if code.startswith("InvalidSecurityToken") else "")
        )
    if code in REGION_CODES or "RegionId" in code:
        return PreflightError(
            f"preflight: region {region} is not usable by this account ({code}): set alicloud:region to a region "
            "the account can use (e.g. cn-hangzhou)"
        )
    if code.startswith("Throttling"):
        return PreflightError(
            f"preflight: Aliyun throttled {operation} ({code}) {THROTTLE_ATTEMPTS} times in a row; wait a minute and retry"
        )
    if code.startswith("Forbidden") or code == "NoPermission":
        return PreflightError(f"preflight: the account may not call {operation} ({code}): grant ecs:{operation} (RAM)")
    if not code and any(word in str(err) for word in ("ConnectionPool", "ConnectionError", "NameResolution", "timed out")):
        return PreflightError(
            f"preflight: cannot reach Aliyun's ECS endpoint for {region} ({operation}): check the network or proxy"
        )
    message = " ".join(str(getattr(err, "message", "") or err).split())[:200]
    return PreflightError(f"preflight: {operation} failed in {region}: {code or type(err).__name__}: {message}")


class EcsApi:
    """The three ECS calls, with bounded retries on throttling. ``sleep`` is injectable (tests)."""

    def __init__(self, region: str, creds: Credentials, *, sleep: Callable[[float], None] = time.sleep):
        from alibabacloud_ecs20140526.client import Client
        from alibabacloud_tea_openapi import models as open_api_models

        self.region = region
        self.sleep = sleep
        config = open_api_models.Config(
            access_key_id=creds.access_key,
            access_key_secret=creds.secret_key,
            security_token=creds.security_token,
            region_id=region,
            connect_timeout=5000,
            read_timeout=15000,
        )
        self.client = Client(config)

    def _call(self, operation: str, method: Callable, request):
        from darabonba.runtime import RuntimeOptions

        delay = THROTTLE_FIRST_DELAY_S
        for attempt in range(1, THROTTLE_ATTEMPTS + 1):
            try:
                return method(request, RuntimeOptions()).body
            except Exception as err:  # noqa: BLE001 - the SDK raises ClientException, ServerException, UnretryableException (network)
                if _code(err).startswith("Throttling") and attempt < THROTTLE_ATTEMPTS:
                    self.sleep(delay)
                    delay *= 2
                    continue
                raise explain(err, self.region, operation) from None
        raise AssertionError("unreachable")

    def zones(self, instance_type: str, spot: bool) -> tuple[ZoneStock, ...]:
        from alibabacloud_ecs20140526 import models

        body = self._call(
            "DescribeAvailableResource",
            self.client.describe_available_resource_with_options,
            models.DescribeAvailableResourceRequest(
                region_id=self.region,
                destination_resource="InstanceType",
                instance_type=instance_type,
                instance_charge_type="PostPaid",
                spot_strategy="SpotAsPriceGo" if spot else "NoSpot",
                io_optimized="optimized",
                system_disk_category=SYSTEM_DISK_CATEGORY,
            ),
        )
        return parse_zones(body, instance_type)

    def price(self, instance_type: str, disk_gib: int, bandwidth_mbps: int, spot: bool) -> HourlyPrice:
        from alibabacloud_ecs20140526 import models

        body = self._call(
            "DescribePrice",
            self.client.describe_price_with_options,
            models.DescribePriceRequest(
                region_id=self.region,
                resource_type="instance",
                instance_type=instance_type,
                system_disk=models.DescribePriceRequestSystemDisk(category=SYSTEM_DISK_CATEGORY, size=disk_gib),
                internet_charge_type="PayByTraffic",
                internet_max_bandwidth_out=bandwidth_mbps,
                price_unit="Hour",
                period=1,
                spot_strategy="SpotAsPriceGo" if spot else None,
            ),
        )
        return parse_price(body)

    def spot_history(self, instance_type: str, zone: str, now: datetime) -> list[tuple[str, Decimal]]:
        from alibabacloud_ecs20140526 import models

        body = self._call(
            "DescribeSpotPriceHistory",
            self.client.describe_spot_price_history_with_options,
            models.DescribeSpotPriceHistoryRequest(
                region_id=self.region,
                zone_id=zone,
                network_type="vpc",
                instance_type=instance_type,
                io_optimized="optimized",
                ostype="linux",
                start_time=_iso(now - timedelta(days=SPOT_HISTORY_DAYS)),
                end_time=_iso(now),
            ),
        )
        return parse_spot_history(body)

    def own_images(self, tags: Mapping[str, str], image_id: str | None = None) -> list[OwnImage]:
        """This account's custom images carrying the tags, in every status (DescribeImages lists only
        Available ones unless asked)."""
        from alibabacloud_ecs20140526 import models

        body = self._call(
            "DescribeImages",
            self.client.describe_images_with_options,
            models.DescribeImagesRequest(
                region_id=self.region,
                image_owner_alias="self",
                image_id=image_id,
                status=IMAGE_STATUSES,
                tag=[models.DescribeImagesRequestTag(key=k, value=v) for k, v in tags.items()],
                page_size=100,
            ),
        )
        return parse_images(body)

    def delete_image(self, image: OwnImage, tags: Mapping[str, str], tries: int = 30) -> None:
        """DeleteImage (Force: nodes made from it keep running), wait until it is gone (the provider
        does too), then its snapshots, which bill otherwise and cannot be deleted while the image exists."""
        from alibabacloud_ecs20140526 import models

        self._call(
            "DeleteImage",
            self.client.delete_image_with_options,
            models.DeleteImageRequest(region_id=self.region, image_id=image.image_id, force=True),
        )
        for _ in range(tries):
            if not self.own_images(tags, image.image_id):
                break
            self.sleep(IMAGE_GONE_POLL_S)
        else:
            raise PreflightError(
                f"preflight: image {image.image_id} is still listed after DeleteImage; its snapshots "
                f"{', '.join(image.snapshot_ids)} are kept: delete them in the console (Snapshots) once it is gone"
            )
        for snapshot in image.snapshot_ids:
            self._call(
                "DeleteSnapshot",
                self.client.delete_snapshot_with_options,
                models.DeleteSnapshotRequest(snapshot_id=snapshot, force=True),
            )


IMAGE_STATUSES = "Creating,Waiting,Available,UnAvailable,CreateFailed,Deprecated"
IMAGE_GONE_POLL_S = 5


@dataclass(frozen=True)
class OwnImage:
    """A custom image of this account (DescribeImages, owner self)."""

    image_id: str
    name: str
    size_gib: int
    created: str
    snapshot_ids: tuple[str, ...]


def parse_images(body) -> list[OwnImage]:
    images = body.images.image if body and body.images and body.images.image else []
    return [
        OwnImage(
            i.image_id,
            i.image_name or "",
            int(i.size or 0),
            i.creation_time or "",
            tuple(
                m.snapshot_id
                for m in (i.disk_device_mappings.disk_device_mapping if i.disk_device_mappings else None) or []
                if m.snapshot_id
            ),
        )
        for i in images
    ]


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- response models -> facts (pure) ----------------------------------------------------------


def parse_zones(body, instance_type: str) -> tuple[ZoneStock, ...]:
    """Every zone DescribeAvailableResource lists for the type, with its stock category."""
    found: list[ZoneStock] = []
    for zone in (body.available_zones.available_zone if body.available_zones else None) or []:
        category = "SoldOut" if zone.status != "Available" else ""
        for resource in (zone.available_resources.available_resource if zone.available_resources else None) or []:
            if resource.type != "InstanceType":
                continue
            for supported in (resource.supported_resources.supported_resource if resource.supported_resources else None) or []:
                if supported.value == instance_type and not category:
                    category = supported.status_category or ("SoldOut" if supported.status != "Available" else WITH_STOCK)
        found.append(ZoneStock(zone.zone_id, category or "SoldOut"))
    return tuple(sorted(found, key=lambda z: z.zone))


def parse_price(body) -> HourlyPrice:
    price = body.price_info.price
    parts: dict[str, Decimal | None] = {}
    for detail in (price.detail_infos.detail_info if price.detail_infos else None) or []:
        parts[detail.resource] = _decimal(detail.trade_price)
    total = _decimal(price.trade_price)
    if total is None:
        raise PreflightError("preflight: DescribePrice answered without a TradePrice")
    return HourlyPrice(total, parts.get("instanceType"), parts.get("systemDisk"), price.currency or "CNY")


def parse_spot_history(body) -> list[tuple[str, Decimal]]:
    """(timestamp, spot price) in time order."""
    rows = (body.spot_prices.spot_price_type if body.spot_prices else None) or []
    return sorted((r.timestamp, _decimal(r.spot_price)) for r in rows if r.spot_price is not None)


def spot_range(histories: dict[str, list[tuple[str, Decimal]]]) -> SpotRange | None:
    """Now: the cheapest zone's latest price; range: over every zone and the whole window."""
    latest = {zone: rows[-1][1] for zone, rows in histories.items() if rows}
    if not latest:
        return None
    zone = min(latest, key=lambda z: (latest[z], z))
    every = [p for rows in histories.values() for _, p in rows]
    return SpotRange(latest[zone], min(every), max(every), zone)


def common_zones(reports: list[TypeReport]) -> list[str]:
    """Zones with stock for every type, those with plenty (WithStock) for all first."""
    sets = [{z.zone: z.category for z in r.zones if z.has_stock} for r in reports]
    if not sets:
        return []
    common = set(sets[0]).intersection(*sets[1:])
    return sorted(common, key=lambda z: (any(s[z] != WITH_STOCK for s in sets), z))
