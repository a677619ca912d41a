"""README.md and README.zh-CN.md list the same config keys (Pulumi.yaml) and make targets
(the Makefile's .PHONY), each target with a row in the targets table, so neither can drift from
the code or from the other; the ACK preflight sample is what `make preflight STACK=ack` prints."""

from __future__ import annotations

import re

import pytest
import yaml

from tools.harness import ROOT

READMES = ["README.md", "README.zh-CN.md"]


def config_keys() -> set[str]:
    return set(yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"])


def phony_targets() -> set[str]:
    lines = re.findall(r"^\.PHONY:(.*)$", (ROOT / "Makefile").read_text(), re.M)
    return {target for line in lines for target in line.split()}


def table_keys(text: str) -> set[str]:
    """gpu-k8s keys named in the first column of the configuration table."""
    keys: set[str] = set()
    for row in re.findall(r"^\| (`[^|]*`[^|]*)\|", text, re.M):
        keys.update(k for k in re.findall(r"`([A-Za-z][A-Za-z0-9]*)`", row))
    return keys


def config_table(text: str) -> str:
    """The table right after the configuration heading (## Configuration / ## 配置)."""
    section = re.split(r"^## (?:Configuration|配置)\b.*$", text, flags=re.M)[1]
    return "\n".join(line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("|"))


def make_targets(text: str) -> set[str]:
    """`make <target>` inside inline code or code blocks."""
    code = "\n".join(re.findall(r"```.*?```", text, re.S) + re.findall(r"`([^`\n]+)`", text))
    return set(re.findall(r"\bmake ([a-z][a-z-]*)", code))


@pytest.mark.parametrize("readme", READMES)
def test_readme_lists_every_config_key(readme):
    keys = table_keys(config_table((ROOT / readme).read_text()))
    assert keys == config_keys(), (sorted(config_keys() - keys), sorted(keys - config_keys()))


@pytest.mark.parametrize("readme", READMES)
def test_readme_lists_every_make_target(readme):
    targets = make_targets((ROOT / readme).read_text())
    assert targets == phony_targets(), (sorted(phony_targets() - targets), sorted(targets - phony_targets()))


def targets_table(text: str) -> set[str]:
    """`make <target>` in the first column of the make-targets table (after `make help`'s row)."""
    rows = re.findall(r"^\| `make ([a-z][a-z-]*)[^`]*` \|", text, re.M)
    return set(rows)


@pytest.mark.parametrize("readme", READMES)
def test_every_make_target_has_a_row(readme):
    rows = targets_table((ROOT / readme).read_text())
    assert rows == phony_targets(), (sorted(phony_targets() - rows), sorted(rows - phony_targets()))


def test_readme_shows_what_preflight_prints_on_ack(monkeypatch, capsys):
    """The ACK sample (cluster fees and a possible NAT gateway beside the nodes), from the recorded
    responses the preflight tests use (dev, p4 and mixed: tests/aliyun/test_preflight.py)."""
    from aliyun_fake import FakeAliyun, install

    from components.aliyun import ecs_api
    from tools import preflight

    install(monkeypatch, FakeAliyun())
    keys = {"ALICLOUD_ACCESS_KEY": "LTAI-test-key", "ALICLOUD_SECRET_KEY": "test-secret"}
    code = preflight.main(
        ["--stack", "ack"], env=keys, api_factory=lambda region, creds: ecs_api.EcsApi(region, creds, sleep=lambda s: None)
    )
    out = capsys.readouterr().out
    assert code == 0
    assert f"$ make preflight STACK=ack\n{out}" in (ROOT / "README.md").read_text()


def test_english_readme_links_the_chinese_one():
    head = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    assert "(README.zh-CN.md)" in head
