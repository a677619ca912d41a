"""Test helpers: run the real program under the mocks, and read what it registered."""

from __future__ import annotations

from tools.harness import ProgramRun, Resource, reveal, run_program
from tools.mocks import PlaceholderMocks, command_env


def run_stack(stack: str = "dev", mocks: PlaceholderMocks | None = None, **overrides: object) -> ProgramRun:
    """The whole program for a stack's real config; bare keys mean gpu-k8s:<key>."""
    return run_program(stack, {(k if ":" in k else f"gpu-k8s:{k}"): v for k, v in overrides.items()}, mocks=mocks)


def env_of(command: Resource) -> dict[str, str]:
    """The VAR=value environment of a remote command's rendered command line."""
    return command_env(reveal(command.inputs["create"]))


def kinds(run: ProgramRun, kind: str) -> list[Resource]:
    return [r for r in run.resources if r.type.startswith("kubernetes:") and r.inputs.get("kind") == kind]
