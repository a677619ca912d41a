"""Driver branch vs GPU generation (NVIDIA's architecture matrix), pure."""

from __future__ import annotations

import pytest

from components.facts import architectures, catalog


@pytest.mark.parametrize(
    "instance_type,driver,ok",
    [
        ("ecs.gn5i-c2g1.large", "580.95.05", True),  # Pascal: R580 is the last
        ("ecs.gn5i-c2g1.large", "590.44.01", False),
        ("ecs.gn6v-c8g1.2xlarge", "595.45.04", False),  # Volta
        ("ecs.gn6i-c4g1.xlarge", "595.45.04", True),  # Turing: ongoing
        ("ecs.gn8is.2xlarge", "470.256.02", False),  # Ada: R520+, the L20 R535+
        ("ecs.gn8is.2xlarge", "525.147.05", False),
        ("ecs.gn8is.2xlarge", "535.129.03", True),
        ("ecs.gn7i-c8g1.2xlarge", "470.256.02", True),  # A10 from R460
        ("ecs.sgn8ia-m2.xlarge", "470.256.03", False),  # GRID follows the same branches
    ],
)
def test_driver_branch_against_the_gpu(instance_type, driver, ok):
    profile = catalog.profile_for(instance_type)
    assert (architectures.support_error(profile.generation, driver, profile.gpu_model) is None) is ok


def test_every_known_family_has_a_generation_and_unknown_ones_do_not():
    assert all(fam.generation in architectures.GENERATIONS for fam in catalog.FAMILIES.values())
    assert catalog.profile_for("ecs.gn9x-c8g1.2xlarge").generation is None
