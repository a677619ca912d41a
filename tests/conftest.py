"""Shared fixtures: Pulumi mocks with global settings restored, and whole-program runs."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from helpers import run_stack
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings

from tools.mocks import PlaceholderMocks


@contextmanager
def installed(mocks: PlaceholderMocks):
    """``mocks`` as Pulumi's mocks for the block; the global settings restored afterwards."""
    saved = settings.SETTINGS
    pulumi_mocks.set_mocks(mocks, project="gpu-k8s", stack="test", preview=False)
    try:
        yield mocks
    finally:
        settings.configure(saved)


@pytest.fixture
def pulumi_mocks_set():
    """Component-level tests: strict placeholder mocks, settings restored afterwards.

    Use with ``@pulumi.runtime.test`` functions that build components directly.
    """
    with installed(PlaceholderMocks()) as mocks:
        yield mocks


@pytest.fixture
def program():
    """Run the real __main__.py for a stack (with optional config overrides)."""

    return run_stack
