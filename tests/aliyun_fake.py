"""A fake transport for Aliyun's Python SDK: recorded responses, no network.

It replaces ``darabonba.core.DaraCore.do_action``, the one function through which every
SDK request leaves (alibabacloud_tea_openapi.client.Client.do_request/do_rpcrequest call
it with the signed DaraRequest). Everything above it runs for real: the request models,
their query building, the signing, the SDK's error mapping (ClientException with the
code), and the response models parsing the recorded JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from darabonba.core import DaraCore
from darabonba.response import DaraResponse

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "aliyun"


def recorded(name: str) -> tuple[int, dict]:
    data = json.loads((FIXTURES / name).read_text())
    return data["status"], data["body"]


class FakeAliyun:
    """Answers each request from ``route(action, query) -> fixture name``; records what was sent."""

    def __init__(self, route: Callable[[str, dict], str] | None = None):
        self.route = route or self.by_action_and_type
        self.requests: list[tuple[str, dict, dict]] = []  # (action, query, headers)

    @staticmethod
    def by_action_and_type(action: str, query: dict) -> str:
        return f"{action}.{query.get('InstanceType')}.json"

    def do_action(self, request, runtime_option=None) -> DaraResponse:
        action = request.headers.get("x-acs-action") or request.query.get("Action")
        query = dict(request.query)
        self.requests.append((action, query, dict(request.headers)))
        status, body = recorded(self.route(action, query))
        response = DaraResponse()
        response.status_code = status
        response.status_message = "OK" if status == 200 else "Error"
        response.headers = {"content-type": "application/json;charset=utf-8"}
        response.body = json.dumps(body).encode()
        return response

    def actions(self) -> list[str]:
        return [a for a, _, _ in self.requests]


def install(monkeypatch, fake: FakeAliyun) -> FakeAliyun:
    monkeypatch.setattr(DaraCore, "do_action", staticmethod(fake.do_action))
    return fake
