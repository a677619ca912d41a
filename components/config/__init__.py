"""Stack configuration: read once, validated, frozen.

``load_config()`` (loader.py) is the only caller of ``pulumi.Config``; it checks every key by
area (aliyun.py, kubeadm.py, ack.py, gpu.py; schema.py says which backend reads which key)
and returns a frozen ``StackConfig`` (model.py). Every mistake is a ``ConfigError``
(errors.py) naming the key, the bad value and what is accepted.
"""

from components.config.errors import ConfigError
from components.config.loader import load_config
from components.config.model import (
    DNS_LABEL_RE,
    IMAGE_REF_RE,
    MAX_NODES,
    MAX_TIME_SLICING_REPLICAS,
    MAX_TTL_HOURS,
    MIG_STRATEGIES,
    MIN_TTL_HOURS,
    SMOKE_TESTS,
    AckSettings,
    NodePool,
    StackConfig,
)

__all__ = [
    "DNS_LABEL_RE",
    "IMAGE_REF_RE",
    "MAX_NODES",
    "MAX_TIME_SLICING_REPLICAS",
    "MAX_TTL_HOURS",
    "MIG_STRATEGIES",
    "MIN_TTL_HOURS",
    "SMOKE_TESTS",
    "AckSettings",
    "ConfigError",
    "NodePool",
    "StackConfig",
    "load_config",
]
