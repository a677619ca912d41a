"""The known-releases table: known accepted, plausible-newer warned, impossible refused (pure)."""

import pytest

from components.facts import releases


@pytest.mark.parametrize(
    "component,version,status",
    [
        (releases.KUBERNETES, "1.34.2", "known"),
        (releases.KUBERNETES, "1.34.9", "newer"),  # may have shipped after the table date
        (releases.KUBERNETES, "1.34.99", "unknown"),
        (releases.KUBERNETES, "1.28.16", "unknown"),  # 1.28 ended with 1.28.15
        (releases.FLANNEL, "v0.26.7", "known"),
        (releases.FLANNEL, "v0.28.10", "newer"),
        (releases.FLANNEL, "v0.29.0", "newer"),
        (releases.FLANNEL, "v0.23.1", "unknown"),  # v0.24.0 shipped: v0.23 is closed
        (releases.FLANNEL, "v9.9.9", "unknown"),
        (releases.DEVICE_PLUGIN, "v0.14.3", "known"),
        (releases.DEVICE_PLUGIN, "v0.99.0", "unknown"),
        (releases.CONTAINER_TOOLKIT, "1.17.8", "known"),
        (releases.CONTAINER_TOOLKIT, "1.99.99", "unknown"),
        (releases.CUDA_TOOLKIT, "12.2", "known"),
        (releases.CUDA_TOOLKIT, "13.1", "newer"),
        (releases.CUDA_TOOLKIT, "99.9", "unknown"),
        (releases.DRIVER, "535.129.03", "known"),
        (releases.DRIVER, "595.91.07", "newer"),  # gpu-operator's driver container, after the snapshot
        (releases.DRIVER, "535.130.01", "newer"),  # gap: the table lists tagged releases only
        (releases.DRIVER, "535.999.99", "unknown"),
        (releases.DRIVER, "999.99.99", "unknown"),
    ],
)
def test_release_verdicts(component, version, status):
    assert releases.check(component, version).status == status


def test_every_default_is_a_known_release():
    from tools.harness import project_defaults

    defaults = project_defaults()
    for component in releases.COMPONENTS:
        value = defaults[f"gpu-k8s:{component.key}"]
        assert releases.check(component, value).status == "known", (component.key, value)


def test_table_is_dated_and_sourced():
    assert releases.UPDATED
    for component in releases.COMPONENTS:
        assert component.source and component.versions
