"""Who may reach the nodes: allowedCidrs with "auto" resolved to the deployer's IP."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pulumi
import pulumi_command as command

from components.config import ConfigError

DETECT_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local" / "detect-public-ip.sh"


def _parse_detected(stdout: str) -> str:
    return f"{ipaddress.IPv4Address(stdout.strip())}/32"


def resolve_allowed_cidrs(cidrs: tuple[str, ...]) -> tuple[str, ...]:
    """Replace "auto" with this machine's public IP/32 (asked at every preview/up)."""
    resolved: list[str] = []
    for cidr in cidrs:
        if cidr != "auto":
            resolved.append(cidr)
            continue
        try:
            result = command.local.run(command=f"bash {DETECT_SCRIPT}")
            resolved.append(_parse_detected(result.stdout))
        except Exception as err:  # noqa: BLE001 - any failure means: ask the user
            raise ConfigError(
                "allowedCidrs",
                "auto",
                f"an explicit CIDR such as 203.0.113.7/32 (your public IP could not be detected: {err})",
            ) from None
    if "0.0.0.0/0" in resolved:
        pulumi.log.warn(
            "gpu-k8s:allowedCidrs includes 0.0.0.0/0: SSH (22) and the Kubernetes API (6443) are open to the whole internet."
        )
    return tuple(dict.fromkeys(resolved))
