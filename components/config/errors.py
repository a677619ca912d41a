"""ConfigError: a user mistake in stack config, one clear message (the key, the bad value, what is accepted)."""

from __future__ import annotations

import json
import textwrap

import pulumi

PROJECT = "gpu-k8s"


class ConfigError(pulumi.RunError):
    """A user mistake in stack config: reported as one line, no traceback."""

    def __init__(self, key: str, value: object, accepted: str, *, reason: str | None = None):
        self.key, self.value, self.accepted = key, value, accepted
        shown = value if isinstance(value, str) else json.dumps(value)
        lines = [f"{qualified(key)}: {shown!r} is not accepted; expected {accepted}"]
        if reason:
            # The why and the fix on lines of their own, so no line runs past ~200 characters.
            why, _, fix = reason.partition(" Fix: ")
            lines.append(f"why: {why.strip()}")
            if fix:
                lines.append(f"Fix: {fix.strip()}")
        super().__init__(wrap_lines(lines))


# Error lines are wrapped here; the plan prefixes ~30 characters ("gpu-k8s plan: config error: ").
MESSAGE_WIDTH = 170


def wrap_lines(lines: list[str], width: int = MESSAGE_WIDTH) -> str:
    """Each line wrapped at ``width``; continuation and detail lines indented by two spaces."""
    out: list[str] = []
    for i, line in enumerate(lines):
        indent = "" if i == 0 else "  "
        out += textwrap.wrap(
            line, width, initial_indent=indent, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False
        )
    return "\n".join(out)


def qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"
