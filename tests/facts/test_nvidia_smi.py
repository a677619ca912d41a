"""components/facts/nvidia_smi.py against real nvidia-smi output (tests/fixtures/nvidia-smi/)."""

from __future__ import annotations

import pytest
from helpers import FIXTURES as TESTS_FIXTURES

from components.facts.nvidia_smi import GpuInfo, SmiTable, parse_query, parse_table

FIXTURES = TESTS_FIXTURES / "nvidia-smi"
H200 = FIXTURES / "h200-driver-580"
# The seed shows only tables for these two; the CSV lines are derived from them (README).
P4_CSV = "Tesla P4, 535.129.03, 7680 MiB"
A10_2Q_CSV = "NVIDIA A10-2Q, 470.161.03, 1889 MiB"


def fixture(path: str) -> str:
    return (FIXTURES / path).read_text()


# --- --query-gpu ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (P4_CSV, GpuInfo("Tesla P4", "535.129.03", 7680)),
        (A10_2Q_CSV, GpuInfo("NVIDIA A10-2Q", "470.161.03", 1889)),
        ("NVIDIA H200, 580.159.04, 143771 MiB", GpuInfo("NVIDIA H200", "580.159.04", 143771)),
    ],
)
def test_query_line_as_12_gpu_verify_prints_it(line: str, expected: GpuInfo):
    assert parse_query(line + "\n") == [expected]


def test_query_nounits():
    assert parse_query("Tesla P4, 535.129.03, 7680\n") == [GpuInfo("Tesla P4", "535.129.03", 7680)]


def test_query_several_gpus_in_order():
    text = "NVIDIA A10, 535.129.03, 23028 MiB\nNVIDIA A10, 535.129.03, 23028 MiB\n"
    assert [g.memory_mib for g in parse_query(text)] == [23028, 23028]
    assert len(parse_query(text)) == 2


def test_query_h200_with_header_and_other_columns():
    """The real capture: --format=csv, nine columns, units in the header and the cells."""
    assert parse_query(fixture("h200-driver-580/query-gpu.csv")) == [GpuInfo("NVIDIA H200", "580.159.04", 143771)]


def test_query_h200_noheader_nounits_with_explicit_columns():
    columns = ("index", "uuid", "name", "driver_version", "memory.total", "compute_cap")
    assert parse_query(fixture("h200-driver-580/query-gpu-noheader.csv"), columns) == [
        GpuInfo("NVIDIA H200", "580.159.04", 143771)
    ]


def test_query_noheader_with_the_wrong_columns_is_an_error():
    with pytest.raises(ValueError, match="expected 3 columns"):
        parse_query(fixture("h200-driver-580/query-gpu-noheader.csv"))


def test_query_not_available_memory_is_none():
    assert parse_query("GRID T4-4Q, 535.161.08, [N/A]\n") == [GpuInfo("GRID T4-4Q", "535.161.08", None)]


def test_query_header_without_name_is_an_error():
    with pytest.raises(ValueError, match="name"):
        parse_query("index, driver_version\n0, 535.129.03\n")


def test_query_bad_memory_is_an_error():
    with pytest.raises(ValueError, match="memory"):
        parse_query("Tesla P4, 535.129.03, lots\n")


def test_query_empty_output():
    assert parse_query("") == []
    assert parse_query("\n\n") == []


def test_query_nvidia_smi_error_text_is_not_a_gpu():
    error = (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n"
    )
    with pytest.raises(ValueError):
        parse_query(error)


# --- the plain table -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("h200-driver-580/nvidia-smi.txt", SmiTable("580.159.04", "13.0", (GpuInfo("NVIDIA H200", "580.159.04", 143771),))),
        ("tesla-p4-driver-535/nvidia-smi.txt", SmiTable("535.129.03", "12.2", (GpuInfo("Tesla P4", "535.129.03", 7680),))),
        ("a10-2q-grid-470/nvidia-smi.txt", SmiTable("470.161.03", "11.4", (GpuInfo("NVIDIA A10-2Q", "470.161.03", 1889),))),
    ],
    ids=["h200-580", "p4-535", "a10-2q-grid-470"],
)
def test_table_fixtures(path: str, expected: SmiTable):
    assert parse_table(fixture(path)) == expected


@pytest.mark.parametrize(
    ("table", "csv"),
    [("tesla-p4-driver-535/nvidia-smi.txt", P4_CSV), ("a10-2q-grid-470/nvidia-smi.txt", A10_2Q_CSV)],
)
def test_table_and_query_agree(table: str, csv: str):
    """The seed's tables and the CSV lines derived from them describe the same GPU."""
    assert list(parse_table(fixture(table)).gpus) == parse_query(csv)


def test_table_two_gpus():
    p4 = fixture("tesla-p4-driver-535/nvidia-smi.txt").splitlines()
    gpu_rows = p4[8:12]  # the GPU block: name row, memory row, MIG row, separator
    second = [gpu_rows[0].replace("|   0  ", "|   1  "), *gpu_rows[1:]]
    text = "\n".join(p4[:12] + second + p4[12:])
    assert [g.name for g in parse_table(text).gpus] == ["Tesla P4", "Tesla P4"]
    assert [g.memory_mib for g in parse_table(text).gpus] == [7680, 7680]


def test_table_ignores_the_processes_section():
    text = fixture("tesla-p4-driver-535/nvidia-smi.txt").replace(
        "|  No running processes found                                                           |",
        "|    0   N/A  N/A      1234      C   python3                                  500MiB |",
    )
    assert len(parse_table(text).gpus) == 1


def test_table_of_an_error_has_nothing():
    assert parse_table("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n") == SmiTable(
        None, None, ()
    )
