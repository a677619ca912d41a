"""Real GPU failure texts (../shared/fixtures/gpu-failures/messages.json) served by a stub kubectl.

The stub answers what 70-gpu-allocatable.sh and 80-gpu-test-result.sh ask the cluster,
from files in $STUB_STATE: per pod <name>.{phase,node,log,events,messages,previous} and,
for the device plugin, gpu-<node> (allocatable) and pods-<node> (its pod line). So a test
puts a fixture text where the fixture says it appears and runs the real script.
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path

from tests.stubs import StubBin
from tools.mock_cluster import KUBECTL_STUB_BODY

REPO = Path(__file__).resolve().parent.parent
SHARED_MESSAGES_JSON = REPO.parent / "shared" / "fixtures" / "gpu-failures" / "messages.json"
# The shared fixture where it is laid out (CI, developers); elsewhere the repo's copy, which
# tests/test_day2.py checks is identical to the shared one whenever both are present.
MESSAGES_JSON = SHARED_MESSAGES_JSON if SHARED_MESSAGES_JSON.exists() else REPO / "tools" / "fixtures" / "gpu-failures.json"
ADMIN_CONF = "apiVersion: v1\nkind: Config\nclusters: []\n"

KUBECTL = KUBECTL_STUB_BODY


@cache
def fixture() -> dict:
    return json.loads(MESSAGES_JSON.read_text())


def cases(group: str) -> list[dict]:
    return list(fixture()[group])


def cluster(sb: StubBin) -> StubBin:
    """A control plane whose kubectl is the stub above."""
    sb.add("kubectl", body=KUBECTL)
    conf = sb.root / "etc/kubernetes/admin.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(ADMIN_CONF)
    return sb


def pod(sb: StubBin, name: str, **files: str) -> None:
    """What kubectl reports about pod ``name`` (phase, node, log, events, messages, previous)."""
    for suffix, text in files.items():
        (sb.state / f"{name}.{suffix}").write_text(text)


def run_result_check(sb: StubBin, env: dict[str, str], timeout: int = 30) -> subprocess.CompletedProcess:
    """80-gpu-test-result.sh as the program renders it, polls shortened."""
    return sb.run("80-gpu-test-result.sh", {"POLL_SECONDS": "0", **env}, timeout=timeout)


def command_failure(create: str, result: subprocess.CompletedProcess) -> str:
    """pulumi-command's error for a remote command that exited non-zero (commandOutputs.go l.101)."""
    return f"Process exited with status {result.returncode}: running {create!r}:\n{result.stdout}{result.stderr}"
