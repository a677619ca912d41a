"""Parse what nvidia-smi prints (pure functions, no I/O).

Two forms are read:

* ``nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader``, the
  line 12-gpu-verify.sh prints (``Tesla P4, 535.129.03, 7680 MiB``); ``nounits`` output
  and other column sets with a ``--format=csv`` header line are read too.
* the plain ``nvidia-smi`` table: driver version, CUDA version, and per GPU its name and
  total memory.

Values nvidia-smi cannot report (``[N/A]``, ``N/A``, ``[Not Supported]``) become None.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# The columns 12-gpu-verify.sh asks for, in order.
DEFAULT_COLUMNS = ("name", "driver_version", "memory.total")

_MISSING = {"", "n/a", "[n/a]", "[not supported]", "not supported", "[unknown error]"}
_MEMORY_RE = re.compile(r"^(?P<value>\d+)\s*(?P<unit>MiB|GiB|KiB)?$", re.IGNORECASE)
_UNIT_IN_HEADER_RE = re.compile(r"\s*\[(?P<unit>[^\]]+)\]\s*$")
_DRIVER_RE = re.compile(r"Driver Version:\s*(?P<v>[0-9][0-9.]*)")
_CUDA_RE = re.compile(r"CUDA Version:\s*(?P<v>[0-9][0-9.]*)")
# "|   0  Tesla P4                       Off | 00000000:00:07.0 Off |  ..."
_GPU_ROW_RE = re.compile(r"^\|\s*(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off)\s*\|")
# "| N/A   41C    P0   23W /  75W |      0MiB /  7680MiB |   2%   Default |"
_MEMORY_USAGE_RE = re.compile(r"(?P<used>\d+)\s*MiB\s*/\s*(?P<total>\d+)\s*MiB")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi names it."""

    name: str
    driver_version: str
    memory_mib: int | None


@dataclass(frozen=True)
class SmiTable:
    """What the plain ``nvidia-smi`` table says."""

    driver_version: str | None
    cuda_version: str | None
    gpus: tuple[GpuInfo, ...]


def _value(cell: str) -> str | None:
    cell = cell.strip()
    return None if cell.lower() in _MISSING else cell


def _memory_mib(cell: str, unit: str | None = None) -> int | None:
    """'7680 MiB', '143771' (nounits, MiB) or '[N/A]' -> MiB."""
    value = _value(cell)
    if value is None:
        return None
    m = _MEMORY_RE.match(value)
    if not m:
        raise ValueError(f"not a memory size: {cell!r}")
    number = int(m.group("value"))
    scale = {"kib": 1 / 1024, "mib": 1, "gib": 1024}[(m.group("unit") or unit or "MiB").lower()]
    return int(number * scale)


def _header(line: str) -> tuple[list[str], dict[str, str]] | None:
    """Column keys and units from a ``--format=csv`` header, or None if ``line`` is data."""
    cells = [c.strip() for c in line.split(",")]
    keys, units = [], {}
    for cell in cells:
        m = _UNIT_IN_HEADER_RE.search(cell)
        key = cell[: m.start()] if m else cell
        if not re.fullmatch(r"[a-z_][a-z0-9_.]*", key):
            return None
        keys.append(key)
        if m:
            units[key] = m.group("unit")
    return (keys, units) if "name" in keys else None


def parse_query(text: str, columns: Sequence[str] = DEFAULT_COLUMNS) -> list[GpuInfo]:
    """GPUs from ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    With a header line the columns are taken from it (any order, extra columns ignored);
    without one they are ``columns`` (by default name, driver_version, memory.total).
    Raises ValueError when a line does not fit the columns.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return []
    keys, units = list(columns), {}
    header = _header(lines[0])
    if header is not None:
        (keys, units), lines = header, lines[1:]
    missing = {"name", "driver_version"} - set(keys)
    if missing:
        raise ValueError(f"nvidia-smi query lacks the column(s) {', '.join(sorted(missing))}")
    gpus = []
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(keys):
            raise ValueError(f"expected {len(keys)} columns ({', '.join(keys)}), got {len(cells)}: {line!r}")
        row = dict(zip(keys, cells, strict=True))
        memory = _memory_mib(row["memory.total"], units.get("memory.total")) if "memory.total" in row else None
        gpus.append(GpuInfo(name=row["name"], driver_version=_value(row["driver_version"]) or "", memory_mib=memory))
    return gpus


def parse_table(text: str) -> SmiTable:
    """Driver version, CUDA version and the GPUs (name, total memory) of plain ``nvidia-smi``."""
    driver = _DRIVER_RE.search(text)
    cuda = _CUDA_RE.search(text)
    driver_version = driver.group("v") if driver else None
    gpus: list[GpuInfo] = []
    pending: str | None = None  # a GPU row seen, waiting for its memory line
    for line in text.splitlines():
        if "Processes:" in line:
            break
        row = _GPU_ROW_RE.match(line)
        if row:
            if pending is not None:
                gpus.append(GpuInfo(pending, driver_version or "", None))
            pending = row.group("name")
            continue
        usage = _MEMORY_USAGE_RE.search(line)
        if usage and pending is not None:
            gpus.append(GpuInfo(pending, driver_version or "", int(usage.group("total"))))
            pending = None
    if pending is not None:
        gpus.append(GpuInfo(pending, driver_version or "", None))
    return SmiTable(driver_version=driver_version, cuda_version=cuda.group("v") if cuda else None, gpus=tuple(gpus))
