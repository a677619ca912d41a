"""Run the real Pulumi program under mocks and record what it would do.

Shared by the offline plan (tools/plan.py), the benchmark and the tests, so there is
one mock world. Mocks are strict: an invoke the program was not written to make fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tools.mocks import PlaceholderMocks

ROOT = Path(__file__).resolve().parent.parent

_default_unraisable_hook = sys.unraisablehook


def _quiet_loop_finalizer(unraisable) -> None:
    """Drop one known piece of noise: the mock monitor runs in executor threads, each with
    an event loop Pulumi creates and never closes; when the garbage collector finalizes one
    after its socket, asyncio prints "Invalid file descriptor: -1". Everything else passes."""
    if isinstance(unraisable.exc_value, ValueError) and "Invalid file descriptor" in str(unraisable.exc_value):
        return
    _default_unraisable_hook(unraisable)


sys.unraisablehook = _quiet_loop_finalizer
PROJECT = "gpu-k8s"
SECRET_SIG = rpc._special_sig_key  # noqa: SLF001 - the wire marker of a secret value
SECRET_VALUE = rpc._special_secret_sig  # noqa: SLF001


@dataclass
class Resource:
    urn: str
    type: str
    name: str
    parent: str
    provider: str
    dependencies: list[str]
    inputs: dict
    outputs: dict
    custom: bool
    additional_secret_outputs: list[str] = field(default_factory=list)
    # Resource options the engine's diff reads (same shape as issue-9b's engine model).
    options: dict = field(default_factory=dict)


@dataclass
class ProgramRun:
    stack: str
    config: dict[str, str]
    resources: list[Resource]
    outputs: dict
    warnings: list[str]
    placeholders: dict[str, str]
    seconds: float

    def of_type(self, type_token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> Resource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def by_urn(self) -> dict[str, Resource]:
        return {r.urn: r for r in self.resources}


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also keeps parent, provider and dependencies of each resource."""

    def __init__(self, mocks: PlaceholderMocks):
        super().__init__(mocks)
        self.records: list[Resource] = []

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        deps = set(request.dependencies)
        for prop_deps in request.propertyDependencies.values():
            deps.update(prop_deps.urns)
        self.records.append(
            Resource(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                provider=request.provider,
                dependencies=sorted(deps),
                inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                outputs=self.resources[response.urn].state if response.urn in self.resources else {},
                custom=request.custom,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                options={
                    "ignoreChanges": list(request.ignoreChanges),
                    "deleteBeforeReplace": bool(request.deleteBeforeReplace),
                },
            )
        )
        return response


class _WarningCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def project_defaults() -> dict[str, object]:
    """Config defaults declared in Pulumi.yaml (the CLI applies these; so do we)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    defaults: dict[str, object] = {}
    for key, decl in (project.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(decl, dict) and "default" in decl:
            defaults[full] = decl["default"]
        elif isinstance(decl, dict) and "value" in decl:
            defaults[full] = decl["value"]
    return defaults


def stack_config(stack: str) -> dict[str, object]:
    path = ROOT / "stacks" / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
        raise FileNotFoundError(f"no stack file {path.relative_to(ROOT)}; stacks: {', '.join(known)}")
    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("config") or {})


def effective_config(stack: str, overrides: dict[str, object] | None = None) -> dict[str, str]:
    """Pulumi.yaml defaults < stack file < overrides, as the engine passes them (strings)."""
    merged: dict[str, object] = {**project_defaults(), **stack_config(stack), **(overrides or {})}
    out: dict[str, str] = {}
    for key, value in merged.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = "<secret from stack file>"
        out[key] = value if isinstance(value, str) else json.dumps(value)
    return out


def run_program(
    stack: str,
    overrides: dict[str, object] | None = None,
    *,
    config: dict[str, str] | None = None,
    mocks: PlaceholderMocks | None = None,
    program: Path | None = None,
) -> ProgramRun:
    """Evaluate __main__.py under mocks; restore the global Pulumi settings afterwards."""
    cfg = config if config is not None else effective_config(stack, overrides)
    mocks = mocks or PlaceholderMocks()
    monitor = _RecordingMonitor(mocks)
    collector = _WarningCollector()
    logger = logging.getLogger(f"gpu-k8s.plan.{id(monitor)}")
    logger.propagate = False
    logger.addHandler(collector)

    saved_settings = settings.SETTINGS
    saved_config = runtime_config.CONFIG.get()
    saved_secret_keys = runtime_config._SECRET_KEYS.get()  # noqa: SLF001
    started = time.perf_counter()
    # A fresh event loop per run, closed afterwards: nothing leaks between runs.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger, monitor=monitor)
        pulumi.runtime.set_all_config(cfg, [k for k in cfg if k == f"{PROJECT}:gridDriverUrl"])
        main = program or ROOT / "__main__.py"
        settings.SETTINGS.rpc_manager.clear()
        settings.SETTINGS.outputs.clear()
        exported: dict = {}

        def program() -> None:
            runpy.run_path(str(main), run_name="__main__")
            exported.update(settings.get_root_resource().outputs)

        _sync_await(run_pulumi_func(program))
        outputs = {key: _sync_await(_resolve_output(value)) for key, value in exported.items()}
    finally:
        settings.configure(saved_settings)
        runtime_config.CONFIG.set(saved_config)
        runtime_config._SECRET_KEYS.set(saved_secret_keys)  # noqa: SLF001
        logger.removeHandler(collector)
        _close_loop(loop)
    return ProgramRun(
        stack=stack,
        config=cfg,
        resources=monitor.records,
        outputs=outputs,
        warnings=collector.messages,
        placeholders=dict(mocks.placeholders),
        seconds=time.perf_counter() - started,
    )


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()
    asyncio.set_event_loop(None)


async def _resolve_output(value: object) -> object:
    """An exported value as the engine would store it: secrets wrapped, unknowns marked."""
    output = pulumi.Output.from_input(value)
    resolved = await output.future(with_unknowns=True)
    if await output.is_secret():
        return {SECRET_SIG: SECRET_VALUE, "value": resolved}
    return resolved


def is_secret(value: object) -> bool:
    return isinstance(value, dict) and value.get(SECRET_SIG) == SECRET_VALUE


def reveal(value: object) -> object:
    """Strip secret markers (for assertions on what a secret holds)."""
    if is_secret(value):
        return reveal(value["value"])
    if isinstance(value, dict):
        return {k: reveal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [reveal(v) for v in value]
    return value


def redact(value: object) -> object:
    """Replace every secret with "[secret]" and unknowns with "[unknown]" (for display)."""
    if is_secret(value):
        return "[secret]"
    if value is rpc.UNKNOWN or (isinstance(value, str) and value == rpc.UNKNOWN):
        return "[unknown]"
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, pulumi.asset.FileAsset):
        path = Path(value.path).resolve()
        return f"file:{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if isinstance(value, pulumi.asset.StringAsset):
        return "<text asset>"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
