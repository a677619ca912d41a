"""Config parsing and validation: every bad value is one clear ConfigError (pure parsers)."""

from decimal import Decimal

import pytest

from components import config
from components.config import ConfigError, aliyun, errors, kubeadm, values  # noqa: F401 (config.<area> below)
from components.facts import catalog


def error_of(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        fn(*args, **kwargs)
    return err.value


def test_error_message_names_key_value_and_what_is_accepted():
    err = error_of(config.aliyun.parse_ttl_hours, "0.1")
    assert str(err).startswith("gpu-k8s:ttlHours: '0.1' is not accepted; expected ")
    assert "0.75" in str(err) and "3 years" in str(err)


@pytest.mark.parametrize(
    "value,hours", [("4", Decimal(4)), ("0.75", Decimal("0.75")), ("0", Decimal(0)), ("26280", Decimal(26280))]
)
def test_ttl_hours_accepted(value, hours):
    assert config.aliyun.parse_ttl_hours(value) == hours


@pytest.mark.parametrize("value", ["0.49", "0.5", "-1", "26281", "four", "", "nan", "inf"])
def test_ttl_hours_rejected(value):
    assert error_of(config.aliyun.parse_ttl_hours, value).key == "ttlHours"


@pytest.mark.parametrize("value", ["-1", "0", "1.5", "abc", "65", True])
def test_node_count_rejected(value):
    assert error_of(config.values.parse_count, "nodeCount", value).key == "nodeCount"


def test_cidrs_auto_and_explicit_and_dedup():
    assert config.aliyun.parse_cidrs(["auto", "203.0.113.7/32", "203.0.113.7/32"]) == ("auto", "203.0.113.7/32")
    assert config.aliyun.parse_cidrs("10.1.0.0/16") == ("10.1.0.0/16",)


@pytest.mark.parametrize("bad", [["300.1.1.1/32"], ["10.0.0.1/16"], ["not-a-cidr"], [], ["2001:db8::/32"], 42])
def test_cidrs_rejected(bad):
    assert error_of(config.aliyun.parse_cidrs, bad).key in ("allowedCidrs",)


@pytest.mark.parametrize("bad", ["", "hangzhou", "CN-HANGZHOU", "cn_hangzhou", "cn-"])
def test_region_rejected(bad):
    assert error_of(config.aliyun.parse_region, bad).key == "alicloud:region"


def test_region_accepted():
    assert config.aliyun.parse_region("ap-southeast-1") == "ap-southeast-1"


@pytest.mark.parametrize("bad", ["-0.5", "1.2345", "free"])
def test_prices_rejected(bad):
    assert error_of(config.values.parse_price, "spotPriceLimit", bad).key == "spotPriceLimit"


def test_price_accepts_three_decimals_and_empty():
    assert config.values.parse_price("spotPriceLimit", "1.234") == Decimal("1.234")
    assert config.values.parse_price("spotPriceLimit", "") is None


def test_one_pool_shorthand():
    (pool,) = config.aliyun.parse_pools("ecs.gn5i-c2g1.large", "2", [], spot=False)
    assert (pool.name, pool.count, pool.profile.driver) == ("gpu", 2, "tesla")
    assert pool.node_names() == ["gpu-0", "gpu-1"]


def test_node_pools_and_both_keys_error():
    pools = config.aliyun.parse_pools(
        "",
        "1",
        [
            {"name": "train", "instanceType": "ecs.gn6i-c4g1.xlarge", "count": 2},
            {"name": "infer", "instanceType": "ecs.sgn7i-vws-m2s.xlarge", "count": 4},
        ],
        spot=False,
    )
    assert [(p.name, p.count, p.profile.driver) for p in pools] == [("train", 2, "tesla"), ("infer", 4, "grid")]
    err = error_of(
        config.aliyun.parse_pools,
        "ecs.gn5i-c2g1.large",
        "1",
        [{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": 1}],
        spot=False,
    )
    assert err.key == "nodePools" and "not both" in str(err)


@pytest.mark.parametrize(
    "pools,key",
    [
        ([{"name": "Train", "instanceType": "ecs.gn5i-c2g1.large", "count": 1}], "nodePools[0].name"),
        ([{"name": "a", "instanceType": "ecs.g7.large", "count": 1}], "nodePools[0].instanceType"),
        ([{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": -1}], "nodePools[0].count"),
        ([{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": 1, "size": 3}], "nodePools[0]"),
        ([{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": 0}], "nodePools"),
        ([{"name": "a", "instanceType": "ecs.gn5i-c2g1.large", "count": 1}] * 2, "nodePools[1].name"),
        ("a-string", "nodePools"),
    ],
)
def test_node_pools_rejected(pools, key):
    assert error_of(config.aliyun.parse_pools, "", "1", pools, spot=False).key == key


def test_non_gpu_type_error_lists_supported_families():
    err = error_of(config.aliyun.parse_pools, "ecs.g7.large", "1", [], spot=False)
    assert err.key == "instanceType" and "sgn7i-vws" in str(err) and "gn5i" in str(err)


def test_spot_rejected_where_catalog_knows_type_is_not_sold_as_spot(monkeypatch):
    # The catalog has no source yet for a family that is never sold as spot (see
    # catalog.SPOT_UNAVAILABLE); the rule is proven with an injected entry.
    monkeypatch.setitem(catalog.SPOT_UNAVAILABLE, "ecs.gn5i-c2g1.large", "test entry")
    err = error_of(config.aliyun.parse_pools, "ecs.gn5i-c2g1.large", "1", [], spot=True)
    assert "spot" in str(err)
    config.aliyun.parse_pools("ecs.gn5i-c2g1.large", "1", [], spot=False)


def test_registry_mirrors():
    assert config.kubeadm.parse_registry_mirrors({"docker.io": "https://x.mirror.aliyuncs.com/"}) == {
        "docker.io": "https://x.mirror.aliyuncs.com"
    }
    assert error_of(config.kubeadm.parse_registry_mirrors, {"docker.io": "ftp://x"}).key == "registryMirrors.docker.io"
    injected = {"docker.io": "https://x'; rm -rf /"}
    assert error_of(config.kubeadm.parse_registry_mirrors, injected).key == "registryMirrors.docker.io"
    assert error_of(config.kubeadm.parse_registry_mirrors, ["docker.io"]).key == "registryMirrors"


@pytest.mark.parametrize("good", ["1.28.0", "1.34.2", "1.35.10"])
def test_kubernetes_version_accepted(good):
    assert config.kubeadm.parse_kubernetes_version(good) == good


@pytest.mark.parametrize("bad", ["1.34", "v1.34.2", "1.27.3", "1.36.0", "latest", "2.0.0"])
def test_kubernetes_version_rejected(bad):
    assert error_of(config.kubeadm.parse_kubernetes_version, bad).key == "kubernetesVersion"


def test_kubernetes_mirror_auto_follows_region():
    assert config.kubeadm.resolve_kubernetes_mirror("auto", "cn-hangzhou") == "aliyun"
    assert config.kubeadm.resolve_kubernetes_mirror("auto", "ap-southeast-1") == "upstream"
    assert config.kubeadm.resolve_kubernetes_mirror("upstream", "cn-beijing") == "upstream"
    assert error_of(config.kubeadm.resolve_kubernetes_mirror, "google", "cn-beijing").key == "kubernetesMirror"


@pytest.mark.parametrize("bad", ["10.244.0.0/24", "10.244.0.1/16", "x"])
def test_pod_cidr_rejected(bad):
    assert error_of(config.kubeadm.parse_pod_cidr, bad).key == "podCidr"


@pytest.mark.parametrize("cidrs,covers", [(["0.0.0.0/1", "128.0.0.0/1"], True), (["0.0.0.0/0"], True), (["0.0.0.0/1"], False)])
def test_covers_all_addresses(cidrs, covers):
    assert config.aliyun.covers_all_addresses(cidrs) is covers


@pytest.mark.parametrize(
    "itype,size",
    [("ecs.t5-lc2m1.nano", (1, 0.5)), ("ecs.g7.large", (2, 8.0)), ("ecs.c7.2xlarge", (8, 16.0)), ("ecs.n4.small", (None, None))],
)
def test_non_gpu_sizes(itype, size):
    assert catalog.non_gpu_size(itype) == size


def test_error_lines_are_short_and_fix_is_on_its_own_line():
    err = ConfigError("smokeTestImage", "x", "y", reason="a " * 150 + "end. Fix: do " + "b " * 100)
    lines = str(err).split("\n")
    assert max(map(len, lines)) <= config.errors.MESSAGE_WIDTH
    assert lines[0] == "gpu-k8s:smokeTestImage: 'x' is not accepted; expected y"
    assert any(line.startswith("  Fix: do") for line in lines)
