"""Helpers for the GPU-layer tests: the real program under the mocks, plus small accessors."""

from __future__ import annotations

from tools.harness import ProgramRun, Resource, run_program
from tools.mocks import PlaceholderMocks, command_env


def run_layer(stack: str = "dev", mocks: PlaceholderMocks | None = None, **overrides: object) -> ProgramRun:
    """The GPU layer for a stack's real config, with gpu-k8s:<key> overrides."""
    return run_program(stack, {f"gpu-k8s:{k}": v for k, v in overrides.items()}, mocks=mocks)


def env_of(command: Resource) -> dict[str, str]:
    """The VAR=value environment of a remote command's rendered command line."""
    return command_env(command.inputs["create"])


def kinds(run: ProgramRun, kind: str) -> list[Resource]:
    return [r for r in run.resources if r.type.startswith("kubernetes:") and r.inputs.get("kind") == kind]
