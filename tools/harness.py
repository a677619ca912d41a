"""Run the real Pulumi program under mocks and record what it would do.

Shared by the offline plan (tools/plan.py), the benchmark and the tests, so there is
one mock world. Mocks are strict: an invoke the program was not written to make fails.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import functools
import hashlib
import json
import logging
import re
import runpy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import yaml
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import resource as pulumi_resource_runtime
from pulumi.runtime import rpc, settings
from pulumi.runtime.proto import resource_pb2, source_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.ack import backend as ack
from components.aliyun import cost, network
from components.facts import ack as ack_support
from tools import engine
from tools.mocks import PlaceholderMocks

# The offline plan never asks Aliyun for prices (components/aliyun/cost.py), even with keys in the
# environment: the mocks' get_instance_types answer none, so the catalog estimate is used.
cost.LIVE_PRICE_LOOKUP = False
# Offline nothing reads a resource's source position (the CLI shows it next to errors): skip the
# SDK's stack walk per resource (traceback.extract_stack), a sixth of a plan's time.
pulumi_resource_runtime._get_stack_trace = source_pb2.StackTrace  # noqa: SLF001
ack_support.CHECK_DEPLOYER_TOOLS = False  # nor whether this machine has kubectl (ACK's checks run there)
network.LIVE_STOCK_LOOKUP = False  # nor for stock: get_zones (mocked) chooses the zone

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
ROOT_STACK_TYPE = "pulumi:pulumi:Stack"
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
    id: str = ""
    # What the engine reads from RegisterResource besides inputs (tools/engine.py):
    # ignoreChanges, replaceOnChanges, deleteBeforeReplace, protect, retainOnDelete.
    options: dict = field(default_factory=dict)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class ProgramRun:
    stack: str
    config: dict[str, str]
    resources: list[Resource]
    outputs: dict
    warnings: list[str]
    placeholders: dict[str, str]
    seconds: float
    # What would make `pulumi up` fail: a step that fails at deploy time (mocks.failures),
    # or the program raising because of it. (pulumi.log.error alone does not: reference §5.)
    errors: list[str] = field(default_factory=list)
    # With a previous state: the engine's plan per resource (tools/engine.py), in order.
    changes: list[engine.Change] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # names of the steps that failed (not in state)
    # After a failed `up` against a previous state: the previous resources the run never reached
    # (they stay in state as they were: no delete runs after a failure), and whether the stack's
    # outputs are the previous update's (the engine records no new ones: reference §7).
    not_reached: list[engine.State] = field(default_factory=list)
    previous: dict[str, engine.State] = field(default_factory=dict)
    outputs_kept: bool = False
    # What stays in the cloud outside the state: images the program let go of with
    # retain_on_delete (a baked node image), as the mock cloud lists them to the next run.
    retained_images: list[dict] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[Resource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> Resource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def by_urn(self) -> dict[str, Resource]:
        return {r.urn: r for r in self.resources}


def _options(request) -> dict:
    """The resource options the engine's diff uses, as RegisterResource carries them."""
    return {
        "ignoreChanges": list(request.ignoreChanges),
        "replaceOnChanges": list(request.replaceOnChanges),
        "deleteBeforeReplace": bool(request.deleteBeforeReplace),
        "protect": bool(request.protect),
        "retainOnDelete": bool(request.retainOnDelete),
    }


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """MockMonitor that also keeps parent, provider, dependencies and options of each resource.

    With ``previous`` (the state a first run left, by URN) it plays the engine: each
    registration is diffed against its previous state (tools/engine.py) and the mocks
    answer accordingly: the old id and outputs for ``same``, the old id and fresh
    outputs for ``update``, a new id for ``create``/``replace`` (PlaceholderMocks.respond).
    """

    def __init__(
        self, mocks: PlaceholderMocks, previous: dict[str, engine.State] | None = None, replace: frozenset[str] = frozenset()
    ):
        super().__init__(mocks)
        self.records: list[Resource] = []
        self.previous = previous
        self.replace = replace  # `pulumi up --replace URN`
        self.changes: list[engine.Change] = []
        self._replaced_providers: set[str] = set()
        self._ops: dict[str, str] = {}

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """The URN the engine gives: the parent's whole qualified type chain, then this type.

        Pulumi's MockMonitor keeps only the parent's last type, so a resource two components
        deep would get a URN the engine never uses (and `--replace URN` would miss it). The
        SDK's own create_urn (pulumi/runtime/resource.py) prefixes everything up to the
        parent URN's last "::", as the engine does.
        """
        chain = parent.split("::")[2] if parent else ""
        if chain and chain != ROOT_STACK_TYPE:  # the engine leaves the root stack out (urn.go NewURN)
            type_ = chain.removeprefix(ROOT_STACK_TYPE + "$") + "$" + type_
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])

    def RegisterResource(self, request):  # noqa: N802 - gRPC method name
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        pulumi_mocks._ensure_event_loop()  # noqa: SLF001 - as MockMonitor.RegisterResource does
        recorded = rpc.deserialize_properties(request.object, keep_unknowns=True)
        options = _options(request)
        change, old = None, None
        if self.previous is not None:
            old = self.previous.get(urn)
            current = engine.State(urn, request.type, request.name, "", canonical(recorded), {}, request.provider, options)
            provider_urn = request.provider.rsplit("::", 1)[0] if request.provider else ""
            change = engine.diff_resource(old, current, provider_replaced=provider_urn in self._replaced_providers)
            if urn in self.replace and old is not None:
                change = engine.Change(urn, request.type, request.name, engine.REPLACE, ("--replace",), "asked with --replace")
            feeding = request.propertyDependencies["kubeconfig"].urns if "kubeconfig" in request.propertyDependencies else []
            rerun = any(self._ops.get(u, engine.SAME) != engine.SAME for u in feeding)
            if request.type == engine.K8S_PROVIDER and change.op == engine.SAME and rerun:
                # §3: preview sees the kubeconfig unknown while its command re-runs.
                note = "a preview shows a replace (kubeconfig unknown until its command re-runs); `up` keeps it if unchanged"
                change = engine.Change(urn, request.type, request.name, engine.SAME, (), note)
            self._ops[urn] = change.op
            if change.op == engine.REPLACE and request.type.startswith("pulumi:providers:"):
                self._replaced_providers.add(urn)
            self.changes.append(change)
        inputs = rpc.deserialize_properties(request.object)
        if old is not None and options["ignoreChanges"]:
            # §5 as the engine does it (step_generator.go processIgnoreChanges): whenever there
            # is a previous state, the old values of ignored inputs are the inputs, also for
            # the resource that replaces it (create) and in the state it leaves.
            recorded = engine.apply_ignore_changes(old.inputs, recorded, options["ignoreChanges"])
            inputs = engine.apply_ignore_changes(old.inputs, inputs, options["ignoreChanges"])
        args = pulumi_mocks.MockResourceArgs(
            typ=request.type,
            name=request.name,
            inputs=inputs,
            provider=request.provider,
            resource_id=request.importId,
            custom=request.custom or False,
        )
        # What the mock cloud needs besides the inputs: which resource this is, and what it
        # depends on (a copy's or a step's connection names its instance).
        args.urn = urn
        args.connection_dependencies = (
            list(request.propertyDependencies["connection"].urns) if "connection" in request.propertyDependencies else []
        )
        if isinstance(self.mocks, PlaceholderMocks):
            rid, state = self.mocks.respond(args, change.op if change else engine.CREATE, old)
        else:
            rid, state = self.mocks.new_resource(args)
        obj = _sync_await(rpc.serialize_properties(state, {}))
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, rid, state)
        deps = set(request.dependencies)
        for prop_deps in request.propertyDependencies.values():
            deps.update(prop_deps.urns)
        self.records.append(
            Resource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                provider=request.provider,
                dependencies=sorted(deps),
                inputs=recorded,
                outputs=state,
                custom=request.custom,
                additional_secret_outputs=list(request.additionalSecretOutputs),
                id=rid,
                options=options,
                property_dependencies={k: sorted(v.urns) for k, v in request.propertyDependencies.items()},
            )
        )
        if isinstance(self.mocks, PlaceholderMocks) and request.name in self.mocks.failed:
            # The step failed (its create exited non-zero): the engine records nothing and
            # the program's outputs that depend on it never resolve (reference §2).
            raise StepFailed(request.name)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=rid, object=obj)


class StepFailed(Exception):
    """A remote step the mock cloud failed; its error is already in ``mocks.failures``."""


class _WarningCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BASE_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


def _yaml_file(path: Path, loader: type = _SAFE_LOADER) -> object:
    """A YAML file's content, parsed once per version of the file (a deep copy each time: callers may
    change what they get). Every plan reads Pulumi.yaml and its stack file several times."""
    stat = path.stat()
    return copy.deepcopy(_parsed_yaml(path, stat.st_mtime_ns, stat.st_size, loader))


@functools.lru_cache(maxsize=64)
def _parsed_yaml(path: Path, _mtime_ns: int, _size: int, loader: type) -> object:
    parser = loader(path.read_text(encoding="utf-8"))  # a safe or base loader, never the full one
    try:
        node = parser.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node)
        return parser.construct_document(node)
    finally:
        parser.dispose()


def _refuse_duplicate_keys(node: yaml.Node, inside: frozenset[int] = frozenset()) -> None:
    """What the CLI's YAML parser (yaml.v3) refuses and PyYAML accepts: a mapping that names a key
    twice (PyYAML keeps the last), an anchor whose value contains itself (PyYAML builds a cycle)."""
    if id(node) in inside:
        raise yaml.constructor.ConstructorError(None, None, "an anchor's value contains itself", node.start_mark)
    inside = inside | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                first = seen.setdefault((key.tag, key.value), key)
                if first is not key:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"mapping key {key.value!r} already defined at line {first.start_mark.line + 1}",
                        key.start_mark,
                    )
            _refuse_duplicate_keys(key, inside)
            _refuse_duplicate_keys(value, inside)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, inside)


class StackFileError(ValueError):
    """A stack file the Pulumi CLI would not load (or no config mapping): one line, ``PATH: what; expected what``."""


STACK_FILE_SHAPE = "a mapping with a config: mapping of namespace:key values, e.g. `config: {alicloud:region: cn-hangzhou}`"
YAML_SHAPE = "YAML as `pulumi config set` writes it: a config: mapping of namespace:key values"


def _kind(value: object, *, shown: bool = True) -> str:
    """A YAML value's kind, with a scalar's value when ``shown``: ``the number 3``, ``a list``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}" if shown else "a boolean"
    if isinstance(value, int | float):
        return f"the number {value}" if shown else "a number"
    if isinstance(value, str):
        return f"the text {value!r}" if shown else "text"
    if isinstance(value, datetime.date):
        return f"the date {value.isoformat()}" if shown else "a date"
    kinds = {list: "a list", dict: "a mapping", bytes: "a !!binary value", set: "a !!set"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), f"a {type(value).__name__}")


def _config_value(where: str, value: object) -> object:
    """A stack value as the CLI reads it (yaml.v3 into interface{}): timestamps stay text; a
    ``secure:`` map must hold text (the ciphertext); no value the CLI cannot read (binary, sets)."""
    if isinstance(value, datetime.date):  # datetime too
        return value.isoformat()
    if isinstance(value, list):
        return [_config_value(f"{where}[{i}]", item) for i, item in enumerate(value)]
    if isinstance(value, dict):
        if "secure" in value and len(value) == 1 and not isinstance(value["secure"], str):
            raise StackFileError(
                f"{where}: secure: holds {_kind(value['secure'])}; "
                "expected the ciphertext text `pulumi config set --secret` writes (secure: v1:...)"
            )
        out = {}
        for key, item in value.items():
            text = key if isinstance(key, str) else json.dumps(_config_value(where, key))
            out[text] = _config_value(f"{where}.{text}", item)
        return out
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise StackFileError(f"{where} is {_kind(value)}; expected text, a number, true/false, a list or a mapping")


@functools.lru_cache(maxsize=16)
def _checked_stack_config(path: Path, _mtime_ns: int, _size: int) -> dict[str, object]:
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    try:
        data = _yaml_file(path)
    except UnicodeDecodeError:
        raise StackFileError(f"{rel}: not UTF-8 text; expected a UTF-8 YAML file, as `pulumi config set` writes") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = " ".join(f"{err.context or ''} {err.problem or ''}".split())
        raise StackFileError(f"{rel}: not valid YAML{at} ({what}); expected {YAML_SHAPE}") from None
    except yaml.YAMLError as err:
        raise StackFileError(f"{rel}: not valid YAML ({' '.join(str(err).split())}); expected {YAML_SHAPE}") from None
    except OSError as err:
        raise StackFileError(f"{rel}: cannot be read ({err.strerror or err}); expected a readable file") from None
    if data is None:
        raise StackFileError(f"{rel}: empty; expected {STACK_FILE_SHAPE}")
    if not isinstance(data, dict):
        raise StackFileError(f"{rel}: the top level is {_kind(data)}; expected {STACK_FILE_SHAPE}")
    config = data.get("config")
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StackFileError(
            f"{rel}: config: is {_kind(config)}; expected a mapping of namespace:key values, e.g. `alicloud:region: cn-hangzhou`"
        )
    out: dict[str, object] = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise StackFileError(
                f"{rel}: the config key {json.dumps(_config_value(str(rel), key))} is {_kind(key, shown=False)}, "
                "not text; expected namespace:name text, e.g. gpu-k8s:nodeCount"
            )
        out[key] = _config_value(f"{rel}: {key}", value)
    return out


def project_defaults() -> dict[str, object]:
    """Config defaults declared in Pulumi.yaml (the CLI applies these; so do we)."""
    project = _yaml_file(ROOT / "Pulumi.yaml")
    defaults: dict[str, object] = {}
    for key, decl in (project.get("config") or {}).items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(decl, dict) and "default" in decl:
            defaults[full] = decl["default"]
        elif isinstance(decl, dict) and "value" in decl:
            defaults[full] = decl["value"]
    return defaults


def stack_config(stack: str) -> dict[str, object]:
    """The stack file's config: mapping (``secure:`` values as ``{"secure": ciphertext}``).

    FileNotFoundError for no such stack; StackFileError for a file the CLI would not load
    (not YAML, no mapping at the top or under config:, a key that is not text, ...)."""
    path = ROOT / "stacks" / f"Pulumi.{stack}.yaml"
    if not path.exists():
        known = sorted(p.name.split(".")[1] for p in (ROOT / "stacks").glob("Pulumi.*.yaml"))
        raise FileNotFoundError(f"no stack file {path.relative_to(ROOT)}; stacks: {', '.join(known)}")
    stat = path.stat()
    return copy.deepcopy(_checked_stack_config(path, stat.st_mtime_ns, stat.st_size))


class ConfigTypeError(ValueError):
    """A stack value the Pulumi CLI refuses against its type in Pulumi.yaml (before running)."""

    def __init__(self, message: str, key: str, value: object, type_name: str):
        super().__init__(message)
        self.key, self.value, self.type_name = key, value, type_name


def _whole_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _valid_content(decl: dict, value: object) -> bool:
    """workspace.ValidateConfigValue: a value (plain string, or an object's content) vs a type."""
    kind = decl.get("type")
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        if _whole_number(value):
            return True
        return isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value) is not None  # strconv.Atoi
    if kind == "boolean":
        return isinstance(value, bool) or value in ("true", "false")
    items = decl.get("items")
    if not isinstance(value, list) or not isinstance(items, dict):
        return False
    return all(_valid_content(items, item) for item in value)


def _type_name(decl: dict) -> str:
    items = decl.get("items")
    return f"array<{_type_name(items)}>" if isinstance(items, dict) else str(decl.get("type"))


_YAML_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][-+]?[0-9]+)?")


def _stored_scalar(raw: str) -> str:
    """The text the CLI stores for a top-level YAML scalar (config/object.go: yaml.v3 decodes
    true/True/TRUE and false forms as bools, numbers as numbers, then MarshalString writes
    them as JSON; anything else, e.g. ``yes``, stays the text)."""
    if raw in ("true", "True", "TRUE", "false", "False", "FALSE"):
        return raw.lower()
    if _YAML_FLOAT.fullmatch(raw) and not re.fullmatch(r"[-+]?[0-9]+", raw):
        number = float(raw)
        return str(int(number)) if number.is_integer() and abs(number) < 1e21 else json.dumps(number)
    return raw


def _raw_stack_scalars(stack: str) -> dict[str, str]:
    """Top-level scalars of the stack file as the CLI stores them (text, not objects)."""
    stack_config(stack)  # refuses a malformed file first (StackFileError)
    data = _yaml_file(ROOT / "stacks" / f"Pulumi.{stack}.yaml", _BASE_LOADER) or {}
    config = data.get("config") if isinstance(data, dict) else None
    config = config if isinstance(config, dict) else {}
    return {k: _stored_scalar(v) for k, v in config.items() if isinstance(k, str) and isinstance(v, str)}


def check_config_types(stack: str, values: dict[str, object]) -> None:
    """Refuse stack values the way `pulumi up`/`preview` do (pkg/workspace/config.go).

    ``values``: key -> a ``str`` for a value stored as plain text (a scalar in the stack
    file, or ``pulumi config set KEY VALUE``, even when the text looks like JSON), or a
    list/dict/int/bool for one stored as an object (a YAML list or map in the stack file,
    or built with ``pulumi config set --path``). Only keys with an explicit ``type`` in
    Pulumi.yaml are checked; a secure value is not (the CLI decrypts it first).
    """
    project = _yaml_file(ROOT / "Pulumi.yaml") or {}
    for key, decl in sorted((project.get("config") or {}).items()):
        full = key if ":" in key else f"{PROJECT}:{key}"
        if not isinstance(decl, dict) or "type" not in decl or full not in values:
            continue
        value = values[full]
        if isinstance(value, dict) and set(value) == {"secure"}:
            continue
        if not _valid_content(decl, value):
            name = _type_name(decl)
            raise ConfigTypeError(f"Stack '{stack}' with configuration key '{key}' must be of type '{name}'", full, value, name)


def effective_config(stack: str, overrides: dict[str, object] | None = None) -> dict[str, str]:
    """Pulumi.yaml defaults < stack file < overrides, as the engine passes them (strings).

    Stack values (file and overrides) are first type-checked as the CLI does
    (``check_config_types``): an override ``str`` (or number, bool) is a plain-text value,
    as ``pulumi config set`` stores it; lists and maps are objects.
    """
    stored = {**stack_config(stack), **_raw_stack_scalars(stack), **(overrides or {})}
    # A scalar in the stack file is stored as its text (as a YAML scalar would be).
    check_config_types(stack, {k: v if isinstance(v, str | list | dict) else json.dumps(v) for k, v in stored.items()})
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
    previous: ProgramRun | list[engine.State] | None = None,
    replace: list[str] | tuple[str, ...] = (),
    previous_outputs: dict | None = None,
) -> ProgramRun:
    """Evaluate __main__.py under mocks; restore the global Pulumi settings afterwards.

    ``previous``: the state a first `pulumi up` left (a ProgramRun, or states loaded
    from a saved plan). The run then plays a second `pulumi up` against it: stable ids,
    old outputs where nothing changed, and ``changes`` says what the engine would do.
    ``replace``: URNs replaced whatever their diff, as `pulumi up --replace URN` does.
    ``previous_outputs``: the stack outputs that state recorded (taken from a ProgramRun):
    when this run fails they are what the stack still shows.

    A run that fails against a previous state stops where the engine stops: what it did
    not reach keeps its previous state, nothing is deleted (deployment_executor.go runs
    ``performDeletes`` only after a program that succeeded), and the stack keeps the
    previous outputs.
    """
    cfg = config if config is not None else effective_config(stack, overrides)
    mocks = mocks or PlaceholderMocks()
    mocks.pin_zone(cfg.get(f"{PROJECT}:zoneId"))
    before = states(previous) if isinstance(previous, ProgramRun) else previous
    if isinstance(previous, ProgramRun) and previous_outputs is None:
        previous_outputs = previous.outputs
    mocks.existing = list(before or [])
    carried = list(previous.retained_images) if isinstance(previous, ProgramRun) else []
    known = {i["id"] for i in mocks.baked_images}
    mocks.baked_images = [*mocks.baked_images, *(i for i in carried if i["id"] not in known)]
    monitor = _RecordingMonitor(mocks, {s.urn: s for s in before} if before is not None else None, frozenset(replace))
    collector = _WarningCollector()
    logger = logging.getLogger(f"gpu-k8s.plan.{id(monitor)}")
    logger.propagate = False
    logger.addHandler(collector)

    saved_settings = settings.SETTINGS
    saved_root = settings.get_root_resource()
    saved_transformations = list(saved_root._transformations or []) if saved_root is not None else []  # noqa: SLF001
    saved_clock = ack.CLOCK
    saved_config = runtime_config.CONFIG.get()
    saved_secret_keys = runtime_config._SECRET_KEYS.get()  # noqa: SLF001
    started = time.perf_counter()
    # A fresh event loop per run, closed afterwards: nothing leaks between runs.
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_quiet_failed_steps)
    asyncio.set_event_loop(loop)
    try:
        pulumi_mocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, logger=logger, monitor=monitor)
        # set_mocks keeps an existing root stack: what a program registers on its root (stack
        # transformations, components/lifecycle.py) must neither come from an earlier run nor
        # reach the next one.
        settings.get_root_resource()._transformations = []  # noqa: SLF001
        ack.CLOCK = mocks.clock  # "now" is the mocks' clock, as for the TTL anchors
        pulumi.runtime.set_all_config(cfg, [k for k in cfg if k == f"{PROJECT}:gridDriverUrl"])
        main = program or ROOT / "__main__.py"
        settings.SETTINGS.rpc_manager.clear()
        settings.SETTINGS.outputs.clear()
        exported: dict = {}

        def program() -> None:
            runpy.run_path(str(main), run_name="__main__")
            exported.update(settings.get_root_resource().outputs)

        errors: list[str] = []
        try:
            _sync_await(run_pulumi_func(program))
        except Exception as err:
            # A step the mocks failed (as the real one would) may make the program raise;
            # that is `pulumi up` failing, which the caller reports. Anything else is a bug.
            if not getattr(mocks, "failures", None):
                raise
            if not isinstance(err, StepFailed):
                errors.append(f"the program raised: {' '.join(str(err).split())}")
        outputs = {}
        for key, value in exported.items():
            try:
                outputs[key] = _sync_await(_resolve_output(value))
            except Exception as err:
                if not getattr(mocks, "failures", None):
                    raise
                outputs[key] = f"<not set: {' '.join(str(err).split())[:200]}>"
        if any(isinstance(v, str) and v.startswith("<not set: ") for v in outputs.values()):
            # The SDK registers the stack's outputs in one call, which fails when one of them
            # is rejected: the engine then records NO output (not even kubeconfig), which is
            # why `make kubeconfig` / `make ssh-key` fall back to the state (tools/stack_secret.py).
            outputs = {key: f"<not recorded: {key} (an output failed, so `up` records none)>" for key in outputs}
    finally:
        ack.CLOCK = saved_clock
        settings.configure(saved_settings)
        root = settings.get_root_resource()
        if root is not None:
            root._transformations = saved_transformations if root is saved_root else []  # noqa: SLF001
        runtime_config.CONFIG.set(saved_config)
        runtime_config._SECRET_KEYS.set(saved_secret_keys)  # noqa: SLF001
        logger.removeHandler(collector)
        _close_loop(loop)
    all_errors = [*getattr(mocks, "failures", []), *errors]
    registered = {r.urn for r in monitor.records}
    not_reached = [s for s in before or [] if s.urn not in registered] if all_errors else []
    kept = bool(all_errors) and before is not None
    if kept:
        outputs = dict(previous_outputs) if previous_outputs is not None else {}
    return ProgramRun(
        stack=stack,
        config=cfg,
        resources=monitor.records,
        outputs=outputs,
        warnings=collector.messages,
        placeholders=dict(mocks.placeholders),
        seconds=time.perf_counter() - started,
        errors=all_errors,
        changes=_with_deletes(monitor.changes, before, monitor.records, failed=bool(all_errors)) if before is not None else [],
        failed=list(getattr(mocks, "failed", [])),
        not_reached=not_reached,
        previous={s.urn: s for s in before or []},
        outputs_kept=kept,
        retained_images=[*carried, *([] if all_errors else _retained_images(before or [], registered))],
    )


def _retained_images(before: list[engine.State], registered: set[str]) -> list[dict]:
    """Images the run let go of with retain_on_delete: the engine drops them from the state and
    leaves them in the cloud (an Available image with its tags, as DescribeImages lists it)."""
    return [
        {
            "id": s.id,
            "imageId": s.id,
            "name": str(s.outputs.get("imageName", "")),
            "tags": dict(s.outputs.get("tags") or s.inputs.get("tags") or {}),
            "status": "Available",
        }
        for s in before
        if s.type == "alicloud:ecs/image:Image" and s.urn not in registered and s.options.get("retainOnDelete")
    ]


NOT_REACHED = "not reached: `up` stopped at a failed step first; its state stays as it was"


def _with_deletes(
    changes: list[engine.Change], before: list[engine.State], now: list[Resource], *, failed: bool = False
) -> list[engine.Change]:
    """The registered resources' changes, then a delete for each previous one not registered.

    After a failure no delete runs (module docstring of run_program): the previous resources
    the run never registered are reported ``same``, not reached."""
    registered = {r.urn for r in now}
    gone = [s for s in before if s.urn not in registered]
    if failed:
        return [*changes, *(engine.Change(s.urn, s.type, s.name, engine.SAME, (), NOT_REACHED) for s in gone)]
    return [*changes, *(c for c in engine.diff_states(gone, []) if c.op == engine.DELETE)]


def _quiet_failed_steps(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """A step the mock cloud failed rejects every resource that waits for it, as on the engine;
    asyncio would print each rejected future as "never retrieved". Those are expected; the
    failure itself is in ``errors``. Anything else is reported as usual."""
    if isinstance(context.get("exception"), StepFailed):
        return
    loop.default_exception_handler(context)


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


def canonical(value: object) -> object:
    """A JSON-safe form of inputs/outputs for saving and comparing state (tools/engine.py).

    Like ``redact`` but a secret becomes ``[secret <digest>]``: 12 hex digits of the
    SHA-256 of its value, so a changed secret shows as a change while the saved plan
    holds no secret text. Text assets become a digest of their text.
    """
    if is_secret(value):
        plain = json.dumps(reveal(value), sort_keys=True, default=str)
        return f"[secret {hashlib.sha256(plain.encode()).hexdigest()[:12]}]"
    if isinstance(value, pulumi.asset.StringAsset):
        return f"<text asset sha256:{hashlib.sha256(value.text.encode()).hexdigest()[:12]}>"
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return redact(value)


def secret_outputs(r: Resource) -> dict:
    """The outputs with additional_secret_outputs marked secret, as the engine stores them."""
    listed = set(r.additional_secret_outputs)
    return {k: {SECRET_SIG: SECRET_VALUE, "value": v} if k in listed and not is_secret(v) else v for k, v in r.outputs.items()}


def state_of(r: Resource) -> engine.State:
    return engine.State(
        r.urn,
        r.type,
        r.name,
        r.id,
        canonical(r.inputs),
        canonical(secret_outputs(r)),
        r.provider,
        r.options,
        tuple(r.property_dependencies.get("connection", ())),
    )


def states(run: ProgramRun) -> list[engine.State]:
    """The state a `pulumi up` of this run leaves (custom resources and components alike).

    A step that failed is not in it when it was a create (reference §2: a failed create records
    nothing), so the next `up` runs it again; a failed update or replace keeps its previous
    state (old inputs), and so the next `up` tries it again too. What a failed run never
    reached keeps its previous state."""
    out = []
    for r in run.resources:
        if r.name not in run.failed:
            out.append(state_of(r))
        elif r.urn in run.previous:
            out.append(run.previous[r.urn])
    return [*out, *run.not_reached]


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
