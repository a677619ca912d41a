"""Parsers every area shares: numbers, prices, choices, patterns, booleans and JSON-valued keys (pure)."""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation

import pulumi

from components.config.errors import ConfigError
from components.config.model import MAX_NODES


def parse_decimal(key: str, value: str, *, accepted: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise ConfigError(key, value, accepted) from None
    if not number.is_finite():
        raise ConfigError(key, value, accepted)
    return number


def parse_count(key: str, value: object, *, minimum: int = 1, maximum: int = MAX_NODES) -> int:
    accepted = f"a whole number from {minimum} to {maximum}"
    if isinstance(value, bool):
        raise ConfigError(key, value, accepted)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ConfigError(key, value, accepted) from None
    if not minimum <= number <= maximum:
        raise ConfigError(key, value, accepted)
    return number


def parse_price(key: str, value: str) -> Decimal | None:
    if str(value).strip() == "":
        return None
    accepted = "a non-negative price in CNY with at most 3 decimals, e.g. 1.8"
    price = parse_decimal(key, value, accepted=accepted)
    if price < 0 or price.as_tuple().exponent < -3:
        raise ConfigError(key, value, accepted)
    return price


def match_pattern(key: str, value: str, pattern: re.Pattern[str], accepted: str) -> str:
    if not pattern.match(value):
        raise ConfigError(key, value, accepted)
    return value


def choice(key: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(key, value, "one of " + ", ".join(choices))
    return value


def boolean(cfg: pulumi.Config, key: str) -> bool:
    raw = cfg.get(key)
    if raw is None:
        return False
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise ConfigError(key, raw, "true or false")


def json_value(cfg: pulumi.Config, key: str, default: object) -> object:
    raw = cfg.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        # A plain string (e.g. `pulumi config set allowedCidrs 203.0.113.4/32`) is one item.
        return raw
