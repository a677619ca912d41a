"""`make outputs` (tools/outputs.py): the outputs, marked STALE when the newest `pulumi up` failed.

A stand-in `pulumi` on PATH answers `stack output --json` and `stack history --json` with the
shapes pulumi/pulumi prints (stack_history.go ``updateInfoJSON``: version, kind, startTime,
result, endTime; the newest update first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tools import outputs
from tools.harness import ROOT

PASSED = {"verdict": "PASSED", "checkedAt": "2027-01-15T08:20:11Z", "test": "vectoradd", "pods": []}
STACK_OUTPUTS = {"region": "cn-hangzhou", "gpuTest": PASSED, "kubeconfig": "[secret]"}


def update(version: int, result: str, end: str) -> dict:
    return {"version": version, "kind": "update", "startTime": end, "result": result, "endTime": end, "message": ""}


SUCCEEDED = update(3, "succeeded", "2027-01-15 08:20:30 +0000 UTC")
FAILED = update(4, "failed", "2027-01-16 09:02:10 +0000 UTC")
REFRESH = {"version": 5, "kind": "refresh", "result": "succeeded", "startTime": "x", "endTime": "x"}


def run_with(tmp_path, history: list[dict], *args: str) -> subprocess.CompletedProcess:
    fake = tmp_path / "pulumi"
    fake.write_text(
        "#!/bin/sh\n"
        f'case "$*" in\n'
        f"  'stack output -s dev --json') printf '%s' '{json.dumps(STACK_OUTPUTS)}';;\n"
        f"  'stack history -s dev --page-size 20 --json') printf '%s' '{json.dumps(history)}';;\n"
        '  *) echo "unexpected: $*" >&2; exit 9;;\n'
        "esac\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "tools.outputs", "--stack", "dev", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_outputs_of_a_successful_update_are_shown_as_they_are(tmp_path):
    result = run_with(tmp_path, [SUCCEEDED])
    assert result.returncode == 0 and "STALE" not in result.stdout
    assert 'gpuTest: {"verdict": "PASSED"' in result.stdout


def test_after_a_failed_update_the_old_passed_is_never_shown_as_current(tmp_path):
    result = run_with(tmp_path, [REFRESH, FAILED, SUCCEEDED])  # a refresh sets no outputs: skipped
    assert result.returncode == outputs.STALE
    first = result.stdout.splitlines()[0]
    assert first.startswith("STALE OUTPUTS: the newest `pulumi up`, update 4 (2027-01-16 09:02:10 +0000 UTC), failed")
    assert "update 3 (2027-01-15 08:20:30 +0000 UTC), the last that succeeded" in first
    shown = json.loads(result.stdout.split("gpuTest: ", 1)[1].splitlines()[0])
    assert shown["verdict"].startswith("STALE: PASSED at 2027-01-15T08:20:11Z by update 3")
    assert shown["verdict"] != "PASSED"
    doc = json.loads(run_with(tmp_path, [FAILED, SUCCEEDED], "--json").stdout)
    assert doc["current"] is False and doc["latest"]["version"] == 4 and doc["outputsFrom"]["version"] == 3


DESTROYED = {"version": 6, "kind": "destroy", "result": "succeeded", "startTime": "x", "endTime": "y"}


@pytest.mark.parametrize(
    ("history", "current"),
    [
        ([], True),
        ([SUCCEEDED], True),
        ([FAILED], False),
        ([update(5, "in-progress", "")], False),
        ([SUCCEEDED, FAILED], False),  # listed out of order: the highest version is the newest
        ([DESTROYED, FAILED, SUCCEEDED], True),  # destroyed since: no output left to be stale
    ],
)
def test_freshness(history, current):
    assert outputs.freshness(history)["current"] is current


def test_json_shows_no_environment_or_config_of_the_history(tmp_path):
    noisy = {**FAILED, "environment": {"git.author.email": "a@example.com"}, "config": {"gpu-k8s:x": {"value": "y"}}}
    doc = json.loads(run_with(tmp_path, [noisy, SUCCEEDED], "--json").stdout)
    assert set(doc["latest"]) == set(outputs.SHOWN) and "example.com" not in json.dumps(doc)


def test_no_pulumi_cli_is_one_line_exit_2(tmp_path):
    env = {"PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "tools.outputs", "--stack", "dev"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "Pulumi CLI is not installed" in result.stderr
