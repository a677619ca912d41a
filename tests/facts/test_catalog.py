"""The GPU catalog: every family rule and its errors (pure, no Pulumi)."""

from decimal import Decimal

import pytest

from components.facts import catalog
from components.facts.catalog import COMPUTE, GRID, TESLA, VGPU, UnknownInstanceType, profile_for

# (instance type, kind, driver, family, gpu count, fraction, memory GiB, nvidia-smi name)
CASES = [
    ("ecs.gn5i-c2g1.large", COMPUTE, TESLA, "gn5i", 1, None, 8.0, "Tesla P4"),
    ("ecs.gn6i-c4g1.xlarge", COMPUTE, TESLA, "gn6i", 1, None, 16.0, "Tesla T4"),
    ("ecs.gn6i-c24g1.12xlarge", COMPUTE, TESLA, "gn6i", 2, None, 32.0, "Tesla T4"),
    ("ecs.gn6v-c8g1.2xlarge", COMPUTE, TESLA, "gn6v", 1, None, 16.0, "Tesla V100-SXM2-16GB"),
    ("ecs.gn6e-c12g1.3xlarge", COMPUTE, TESLA, "gn6e", 1, None, 32.0, "Tesla V100-SXM2-32GB"),
    ("ecs.gn7i-c8g1.2xlarge", COMPUTE, TESLA, "gn7i", 1, None, 24.0, "NVIDIA A10"),
    ("ecs.gn7e-c16g1.4xlarge", COMPUTE, TESLA, "gn7e", 1, None, 80.0, None),
    ("ecs.gn8is.2xlarge", COMPUTE, TESLA, "gn8is", None, None, None, "NVIDIA L20"),
    ("ecs.ebmgn6i.24xlarge", COMPUTE, TESLA, "ebmgn6i", 4, None, 64.0, "Tesla T4"),
    ("ecs.ebmgn7i.32xlarge", COMPUTE, TESLA, "ebmgn7i", 4, None, 96.0, "NVIDIA A10"),
    ("ecs.vgn5i-m1.large", VGPU, GRID, "vgn5i", 1, "1/8", 1.0, None),
    ("ecs.vgn6i-m4-vws.xlarge", VGPU, GRID, "vgn6i", 1, "1/4", 4.0, "GRID T4-4Q"),
    ("ecs.vgn7i-vws-m4.xlarge", VGPU, GRID, "vgn7i-vws", 1, "1/6", 4.0, "NVIDIA A10-4Q"),
    ("ecs.sgn7i-vws-m2s.xlarge", VGPU, GRID, "sgn7i-vws", 1, "1/12", 2.0, "NVIDIA A10-2Q"),
    ("ecs.sgn7i-vws-m8.4xlarge", VGPU, GRID, "sgn7i-vws", 1, "1/3", 8.0, "NVIDIA A10-8Q"),
    ("ecs.sgn8ia-m2.xlarge", VGPU, GRID, "sgn8ia", 1, None, 2.0, None),
]


@pytest.mark.parametrize("itype,kind,driver,family,count,fraction,memory,name", CASES)
def test_classifies_every_required_family(itype, kind, driver, family, count, fraction, memory, name):
    p = profile_for(itype)
    assert (p.kind, p.driver, p.family) == (kind, driver, family)
    assert (p.gpu_count, p.gpu_fraction, p.gpu_memory_gib) == (count, fraction, memory)
    assert p.expected_gpu_name == name
    assert p.known_family


def test_vgpu_is_decided_by_prefix_not_vws_suffix():
    # sgn8ia has no -vws; vgn6i puts it after the size token: both are GRID.
    assert profile_for("ecs.sgn8ia-m2.xlarge").driver == GRID
    assert profile_for("ecs.vgn6i-m4-vws.xlarge").driver == GRID
    # and a compute type never becomes GRID, whatever follows the prefix
    assert profile_for("ecs.gn7i-c16g1.4xlarge").driver == TESLA


def test_grid_plugin_per_family():
    assert profile_for("ecs.sgn7i-vws-m2s.xlarge").grid_plugin == "grid_driver_install"
    assert profile_for("ecs.sgn8ia-m2.xlarge").grid_plugin == "gpu_grid_driver_install"
    assert profile_for("ecs.vgn5i-m1.large").grid_plugin is None
    assert profile_for("ecs.gn6i-c4g1.xlarge").grid_plugin is None


def test_unknown_gpu_family_is_still_classified_but_flagged():
    p = profile_for("ecs.gn7s-c8g1.2xlarge")
    assert (p.kind, p.driver, p.known_family) == (COMPUTE, TESLA, False)
    assert p.gpu_model is None


@pytest.mark.parametrize("bad", ["ecs.g7.large", "ecs.c6.xlarge", "gn5i-c2g1.large", "ecs.GN5I.large", "", "ecs.gn6i"])
def test_non_gpu_or_malformed_types_are_errors_listing_families(bad):
    with pytest.raises(UnknownInstanceType) as err:
        profile_for(bad)
    message = str(err.value)
    assert repr(bad) in message
    for family in ("gn5i", "sgn7i-vws", "sgn8ia", "ebmgn7i"):
        assert family in message


def test_list_prices_are_dated_estimates():
    p = profile_for("ecs.sgn7i-vws-m2s.xlarge")
    assert p.list_price_cny == Decimal("1.833") and "2024-12-31" in p.price_source
    assert profile_for("ecs.gn6i-c4g1.xlarge").list_price_cny == Decimal("11.63")
    assert profile_for("ecs.gn6v-c8g1.2xlarge").list_price_cny is None


def test_product_label_matches_nvidia_smi_name_with_dashes():
    assert catalog.product_label("NVIDIA A10-2Q") == "NVIDIA-A10-2Q"
    assert catalog.product_label("Tesla P4") == "Tesla-P4"
    assert catalog.product_label(" Tesla V100-SXM2-16GB ") == "Tesla-V100-SXM2-16GB"


def test_summary_reads_like_a_sentence():
    assert profile_for("ecs.sgn7i-vws-m2s.xlarge").summary() == "1/12 of NVIDIA A10 (vGPU, GRID driver)"
    assert profile_for("ecs.gn5i-c2g1.large").summary() == "1x Tesla P4 (compute, Tesla driver)"
