"""make preflight offline: Aliyun's real SDK driven by recorded responses (tests/aliyun_fake.py)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aliyun_fake import FakeAliyun, install
from helpers import shipped

from components.aliyun import ecs_api
from tools import preflight

KEYS = {"ALICLOUD_ACCESS_KEY": "LTAI-test-key", "ALICLOUD_SECRET_KEY": "test-secret"}
NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def run(monkeypatch, capsys, stack: str, fake: FakeAliyun | None = None, env: dict | None = None):
    fake = install(monkeypatch, fake or FakeAliyun())
    sleeps: list[float] = []
    code = preflight.main(
        ["--stack", stack],
        env=KEYS if env is None else env,
        api_factory=lambda region, creds: ecs_api.EcsApi(region, creds, sleep=sleeps.append),
    )
    out, err = capsys.readouterr()
    return code, out, err, fake, sleeps


# Per node: DescribePrice TradePrice (instance + system disk) of the recorded response.
@pytest.mark.parametrize(
    ("stack", "rows", "hourly", "most"),
    [
        ("dev", ["ecs.sgn7i-vws-m2s.xlarge  1      cn-hangzhou-h (low), cn-hangzhou-i, cn-hangzhou-k  1.782"], "1.782", "7.128"),
        ("p4", ["ecs.gn5i-c2g1.large  1      cn-hangzhou-b     8.556"], "8.556", "34.224"),
        ("mixed", ["ecs.gn6i-c4g1.xlarge      2", "ecs.sgn7i-vws-m2s.xlarge  4"], "25.52", "102.08"),
    ],
)
def test_table_from_recorded_responses(monkeypatch, capsys, stack, rows, hourly, most):
    code, out, err, fake, _ = run(monkeypatch, capsys, stack)
    assert code == 0, err
    assert out.startswith(f"preflight {stack} (cn-hangzhou, pay-as-you-go), from Aliyun's ECS API:")
    for row in rows:
        assert row in out
    assert f"stack total: {hourly} CNY/h" in out
    assert f"most before auto-release: {most} CNY (after ttlHours 4 h)" in out
    assert "billed by traffic (per GB), not per hour" in out
    assert "DescribeSpotPriceHistory" not in fake.actions()  # not a spot stack


def test_price_arithmetic_against_the_recorded_response():
    """TradePrice is the total; the parts are the DetailInfos (instance, system disk)."""
    from alibabacloud_ecs20140526 import models
    from aliyun_fake import recorded

    _, body = recorded("DescribePrice.ecs.gn6i-c4g1.xlarge.json")
    price = ecs_api.parse_price(models.DescribePriceResponseBody().from_map(body))
    assert price == ecs_api.HourlyPrice(Decimal("9.196"), Decimal("9.14"), Decimal("0.056"), "CNY")
    assert price.instance + price.system_disk == price.total
    reports = [ecs_api.TypeReport("a", 2, (), price, None), ecs_api.TypeReport("b", 1, (), price, None)]
    assert preflight.totals(reports, Decimal("2.5")) == (Decimal("27.588"), Decimal("68.9700"))
    assert preflight.totals(reports, Decimal(0))[1] is None  # auto-release off: unbounded


def test_requests_the_sdk_sends(monkeypatch, capsys):
    code, _, _, fake, _ = run(monkeypatch, capsys, "dev")
    assert code == 0
    sent = {action: (query, headers) for action, query, headers in fake.requests}
    stock, _ = sent["DescribeAvailableResource"]
    assert stock["DestinationResource"] == "InstanceType"
    assert stock["SystemDiskCategory"] == "cloud_essd"
    assert stock["InstanceChargeType"] == "PostPaid"
    price, headers = sent["DescribePrice"]
    assert {k: price[k] for k in ("ResourceType", "InstanceType", "PriceUnit", "InternetChargeType")} == {
        "ResourceType": "instance",
        "InstanceType": "ecs.sgn7i-vws-m2s.xlarge",
        "PriceUnit": "Hour",
        "InternetChargeType": "PayByTraffic",
    }
    assert (price["SystemDisk.Category"], price["SystemDisk.Size"], price["InternetMaxBandwidthOut"]) == (
        "cloud_essd",
        "60",
        "100",
    )
    assert "SpotStrategy" not in price
    # The SDK signed it with the environment's key (ACS3-HMAC-SHA256), nothing hand-rolled.
    assert headers["Authorization"].startswith("ACS3-HMAC-SHA256 Credential=LTAI-test-key,")


def test_spot_prices_and_history(monkeypatch):
    fake = install(
        monkeypatch,
        FakeAliyun(
            lambda action, q: (
                "DescribeSpotPriceHistory.ecs.gn6i-c4g1.xlarge.json"
                if action == "DescribeSpotPriceHistory"
                else FakeAliyun.by_action_and_type(action, q)
            )
        ),
    )
    cfg = dataclasses.replace(preflight.load_stack("mixed"), spot=True)
    reports = preflight.check(cfg, ecs_api.EcsApi(cfg.region, ecs_api.Credentials("k", "s")), NOW)
    gn6i = reports[0]
    assert gn6i.spot == ecs_api.SpotRange(Decimal("2.05"), Decimal("1.92"), Decimal("2.31"), "cn-hangzhou-h")
    spot_queries = [q for a, q, _ in fake.requests if a == "DescribeSpotPriceHistory"]
    # One per zone with stock (3 for gn6i, 3 for sgn7i), over the last 3 days.
    assert len(spot_queries) == 6
    assert spot_queries[0]["StartTime"] == "2026-11-26T03:00:00Z" and spot_queries[0]["EndTime"] == "2026-11-29T03:00:00Z"
    assert all(q["SpotStrategy"] == "SpotAsPriceGo" for a, q, _ in fake.requests if a == "DescribePrice")
    assert "2.05 (cn-hangzhou-h)" in preflight.render(cfg, reports)


def test_no_stock_anywhere_exits_2_naming_the_zones(monkeypatch, capsys):
    fake = FakeAliyun(
        lambda action, q: (
            "DescribeAvailableResource.soldout.json"
            if action == "DescribeAvailableResource"
            else FakeAliyun.by_action_and_type(action, q)
        )
    )
    code, _, err, _, _ = run(monkeypatch, capsys, "dev", fake)
    assert code == 2
    assert err.strip().splitlines() == [
        "preflight: ecs.sgn7i-vws-m2s.xlarge has no stock in any zone of cn-hangzhou (DescribeAvailableResource: "
        "cn-hangzhou-h SoldOut, cn-hangzhou-i SoldOut); try another region (alicloud:region) or type"
    ]


def test_no_credentials_is_one_line_and_no_request(monkeypatch, capsys):
    code, _, err, fake, _ = run(monkeypatch, capsys, "dev", env={"ALICLOUD_ACCESS_KEY": "only-the-key"})
    assert code == 2
    assert err.strip().splitlines() == [
        "preflight: no credentials: export ALICLOUD_ACCESS_KEY and ALICLOUD_SECRET_KEY (as for `pulumi up`); "
        "`make plan` needs none"
    ]
    assert fake.requests == []


def test_security_token_is_sent(monkeypatch, capsys):
    code, _, _, fake, _ = run(monkeypatch, capsys, "dev", env={**KEYS, "ALICLOUD_SECURITY_TOKEN": "sts-token"})
    assert code == 0
    assert {h.get("x-acs-security-token") for _, _, h in fake.requests} == {"sts-token"}


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("error.InvalidAccessKeyId.NotFound.json", "refused the credentials (InvalidAccessKeyId.NotFound)"),
        ("error.SignatureDoesNotMatch.json", "refused the credentials (SignatureDoesNotMatch)"),
        ("error.InvalidRegionId.NotFound.json", "region cn-hangzhou is not usable by this account (InvalidRegionId.NotFound)"),
    ],
)
def test_api_errors_are_one_line(monkeypatch, capsys, fixture, expected):
    code, out, err, fake, sleeps = run(monkeypatch, capsys, "dev", FakeAliyun(lambda action, q: fixture))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err and "Traceback" not in err
    assert len(fake.requests) == 1 and sleeps == []  # not retried


def test_throttling_is_retried_with_backoff_then_succeeds(monkeypatch, capsys):
    answers = iter(["error.Throttling.User.json"] * 2)
    fake = FakeAliyun(lambda action, q: next(answers, None) or FakeAliyun.by_action_and_type(action, q))
    code, out, err, fake, sleeps = run(monkeypatch, capsys, "dev", fake)
    assert code == 0, err
    assert sleeps == [1.0, 2.0]
    assert fake.actions()[:3] == ["DescribeAvailableResource"] * 3


def test_throttling_is_bounded(monkeypatch, capsys):
    code, _, err, fake, sleeps = run(monkeypatch, capsys, "dev", FakeAliyun(lambda action, q: "error.Throttling.User.json"))
    assert code == 2
    assert sleeps == [1.0, 2.0, 4.0] and len(fake.requests) == ecs_api.THROTTLE_ATTEMPTS
    assert err.strip() == (
        "preflight: Aliyun throttled DescribeAvailableResource (Throttling.User) 4 times in a row; wait a minute and retry"
    )


def test_config_error_is_one_line(capsys):
    assert preflight.main(["--stack", "nosuch"], env=KEYS) == 2
    assert capsys.readouterr().err.startswith("preflight: config error: no stack file stacks/Pulumi.nosuch.yaml")


def test_common_zones_prefer_plenty_of_stock():
    def report(*zones):
        return ecs_api.TypeReport("t", 1, tuple(ecs_api.ZoneStock(z, c) for z, c in zones), None, None)

    reports = [
        report(("z-a", "ClosedWithStock"), ("z-b", "WithStock"), ("z-c", "WithStock")),
        report(("z-a", "WithStock"), ("z-b", "WithStock"), ("z-c", "WithoutStock")),
    ]
    assert ecs_api.common_zones(reports) == ["z-b", "z-a"]


# --- the program's cost output (components/aliyun/cost.py) -------------------------------------------


def test_plan_with_keys_in_the_environment_calls_no_network(monkeypatch, program):
    """The offline plan turns the live lookup off: keys in the env change nothing, no request leaves."""
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    fake = install(monkeypatch, FakeAliyun())
    run = program("dev")
    assert fake.requests == []
    assert [n["source"] for n in run.outputs["cost"]["perNode"]] == [
        "estimate: karpenter-provider-alibabacloud on-demand price table, cn-hangzhou, 2024-12-31"
    ]


def test_plan_needs_no_credentials(monkeypatch, program):
    for key in (*KEYS, "ALICLOUD_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    assert program("dev").outputs["cost"]["hourlyTotal"] == "1.83"


def test_deploy_time_cost_uses_describe_price(monkeypatch):
    from components.aliyun import cost

    monkeypatch.setattr(cost, "LIVE_PRICE_LOOKUP", True)
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    fake = install(monkeypatch, FakeAliyun())
    cfg = preflight.load_stack("mixed")
    assert cost.described_prices(cfg) == {"ecs.gn6i-c4g1.xlarge": Decimal("9.196"), "ecs.sgn7i-vws-m2s.xlarge": Decimal("1.782")}
    assert fake.actions() == ["DescribePrice", "DescribePrice"]
    picked = cost.node_price("n", "p", "t", live=Decimal(5), described=Decimal("9.196"), pool_override=None,
                             stack_override=None, list_price=None)  # fmt: skip
    assert (picked.hourly_cny, picked.source) == (Decimal("9.196"), cost.DESCRIBE_PRICE_SOURCE)
    assert cost.summarize([picked], Decimal(4))["estimate"] is False


def test_deploy_time_cost_falls_back_when_aliyun_refuses(monkeypatch):
    from components.aliyun import cost

    warned: list[str] = []
    monkeypatch.setattr(cost.pulumi.log, "warn", lambda message, *a, **k: warned.append(message))
    monkeypatch.setattr(cost, "LIVE_PRICE_LOOKUP", True)
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    install(monkeypatch, FakeAliyun(lambda action, q: "error.InvalidAccessKeyId.NotFound.json"))
    assert cost.described_prices(preflight.load_stack("dev")) == {}
    assert [w[:76] for w in warned if w.startswith("cost:")] == [
        "cost: DescribePrice gave no price (preflight: Aliyun refused the credentials"
    ]


def test_deploy_time_cost_without_keys_asks_nothing(monkeypatch):
    from components.aliyun import cost

    monkeypatch.setattr(cost, "LIVE_PRICE_LOOKUP", True)
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    fake = install(monkeypatch, FakeAliyun())
    assert cost.described_prices(preflight.load_stack("dev")) == {}
    assert fake.requests == []


# --- zone choice (components/aliyun/network.py) -------------------------------------------------------

HANGZHOU = ["cn-hangzhou-h", "cn-hangzhou-i", "cn-hangzhou-k"]


@pytest.mark.parametrize(
    ("stocked", "chosen"),
    [(None, "cn-hangzhou-h"), (["cn-hangzhou-k", "cn-hangzhou-i"], "cn-hangzhou-k"), (["cn-hangzhou-z"], "cn-hangzhou-h")],
)
def test_pick_zone_prefers_stock_for_every_type(stocked, chosen):
    from components.aliyun import network

    assert network.pick_zone("cn-hangzhou", ("t",), False, stocked=stocked, sellable=HANGZHOU) == chosen


def test_zone_choice_says_why():
    from components.aliyun.network import zone_choice

    kw = {"existing": None, "pinned": None, "sellable": HANGZHOU}
    assert zone_choice("cn-hangzhou-i", **kw, stocked=["cn-hangzhou-i"]) == (
        "cn-hangzhou-i: every type has stock there (DescribeAvailableResource; get_zones lists "
        "cn-hangzhou-h, cn-hangzhou-i, cn-hangzhou-k)"
    )
    assert zone_choice("cn-hangzhou-h", **kw, stocked=None).endswith("; stock not checked offline (make preflight)")
    assert zone_choice("cn-hangzhou-h", **kw, stocked=[]).endswith("; no zone has stock for every type")
    assert zone_choice("cn-hangzhou-k", **{**kw, "existing": "cn-hangzhou-k"}, stocked=None).startswith(
        "cn-hangzhou-k: this stack's vSwitch is there"
    )
    assert (
        zone_choice("cn-hangzhou-k", **{**kw, "pinned": "cn-hangzhou-k"}, stocked=None)
        == "cn-hangzhou-k: pinned by gpu-k8s:zoneId"
    )


def test_deploy_time_zone_prefers_stock(monkeypatch):
    """With the stock lookup on (as at deploy time) the zone with stock wins over get_zones' first."""
    from components.aliyun import network
    from tools.harness import run_program
    from tools.mocks import PlaceholderMocks

    monkeypatch.setattr(network, "LIVE_STOCK_LOOKUP", True)
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    fake = install(monkeypatch, FakeAliyun())
    run = run_program("dev", mocks=PlaceholderMocks(zones=HANGZHOU))
    # Recorded: cn-hangzhou-h ClosedWithStock (low), -i and -k WithStock.
    assert run.outputs["zone"] == "cn-hangzhou-i"
    assert run.outputs["zoneChoice"].startswith("cn-hangzhou-i: every type has stock there")
    assert fake.actions() == ["DescribeAvailableResource"]  # the price lookup stays off under the harness


def test_offline_plan_explains_the_zone(program):
    assert shipped("dev").outputs["zoneChoice"].endswith("stock not checked offline (make preflight)")


def test_unreachable_endpoint_is_one_line(monkeypatch, capsys):
    import requests

    def refuse(request, runtime_option=None):
        raise requests.ConnectionError("HTTPSConnectionPool(host='ecs-cn-hangzhou.aliyuncs.com', port=443): Max retries")

    fake = FakeAliyun()
    monkeypatch.setattr(fake, "do_action", refuse)
    code, _, err, _, _ = run(monkeypatch, capsys, "dev", fake)
    assert code == 2
    assert err.strip() == (
        "preflight: cannot reach Aliyun's ECS endpoint for cn-hangzhou (DescribeAvailableResource): check the network or proxy"
    )


@pytest.mark.parametrize("stack", ["dev", "p4", "mixed"])
def test_readme_shows_the_tables_preflight_prints(monkeypatch, capsys, stack):
    from tools.harness import ROOT

    code, out, _, _, _ = run(monkeypatch, capsys, stack)
    assert code == 0
    assert f"$ make preflight STACK={stack}\n{out}" in (ROOT / "README.md").read_text()


def test_no_price_lookup_can_fail_up(monkeypatch, program):
    """DescribePrice refused and get_instance_types (the billing API) raising: `up` still
    succeeds, the price says unknown and why (issue 23)."""
    from components.aliyun import cost
    from tools.mocks import PlaceholderMocks

    class NoBillingApi(PlaceholderMocks):
        def call(self, args):
            if args.token == "alicloud:ecs/getInstanceTypes:getInstanceTypes":  # the invoke fails, as the provider's does
                return {}, [("", "Forbidden.RAM: User not authorized to operate on the specified resource (bssapi)")]
            return super().call(args)

    monkeypatch.setattr(cost, "LIVE_PRICE_LOOKUP", True)
    for key, value in KEYS.items():
        monkeypatch.setenv(key, value)
    install(monkeypatch, FakeAliyun(lambda action, q: "error.InvalidAccessKeyId.NotFound.json"))
    run = program("dev", NoBillingApi(), instanceType="ecs.gn6v-c8g1.2xlarge")  # no catalog price either
    assert run.errors == []
    (node,) = run.outputs["cost"]["perNode"]
    assert node["hourly"] is None and node["source"].startswith("unknown (get_instance_types failed: ")
    assert "Forbidden.RAM" in node["source"]
    assert any("bssapi:GetPayAsYouGoPrice" in w for w in run.warnings)
    assert any(w.startswith("cost: DescribePrice gave no price") for w in run.warnings)


def test_ack_total_has_the_cluster_fees_and_a_possible_nat(monkeypatch, capsys):
    """On ACK: nodes (recorded DescribePrice) + Pro fee + API CLB + API EIP + a NAT gateway ACK may make."""
    code, out, err, _, _ = run(monkeypatch, capsys, "ack")
    assert code == 0, err
    for line in (
        "    cluster management fee (ACK Pro): 0.64 CNY/h",
        "    API server load balancer (CLB): 0.147 CNY/h",
        "    API server public endpoint (EIP): 0.02 CNY/h",
        "    NAT gateway made by ACK, with its EIP, if ACK makes one",
    ):
        assert line in out, out
    # 9.196 (the T4 node) + 0.64 + 0.147 + 0.02 + 0.215
    assert "stack total: 10.218 CNY/h = nodes 9.196 (DescribePrice TradePrice x nodes) + ACK fees 1.022" in out
    assert "plus 1.022 CNY/h for the cluster until `make down`" in out


def test_a_bake_stack_names_the_image_storage(monkeypatch, capsys):
    monkeypatch.setattr(preflight, "load_stack", lambda stack, _load=preflight.load_stack: dataclasses.replace(
        _load(stack), node_image="bake"
    ))  # fmt: skip
    code, out, err, _, _ = run(monkeypatch, capsys, "p4")
    assert code == 0, err
    assert "baked node images (tesla): at most 7.2 CNY/month each in snapshot storage" in out


def test_ack_fees_in_cny_are_not_added_to_a_usd_total():
    cfg = preflight.load_stack("ack")
    price = ecs_api.HourlyPrice(Decimal("1.2"), Decimal("1.1"), Decimal("0.1"), "USD")
    out = preflight.render(cfg, [ecs_api.TypeReport("ecs.gn6i-c4g1.xlarge", 1, (), price, None)])
    assert "stack total: 1.2 USD/h" in out and "ACK fees in CNY per hour, not added to the USD total" in out
