"""`make outputs`: the stack outputs, and whether they describe the cluster as it is now.

    python -m tools.outputs --stack dev [--json]

A `pulumi up` that fails records no new stack outputs: the stack keeps those of the last
update that succeeded (pulumi/pulumi deployment_executor.go finalises the stack outputs of
an errored update from the old ones; the Python SDK registers them in one call at the end
of a program that completed). So after a day-2 `up` whose GPU test failed, `pulumi stack
output` still says PASSED. This reads the stack's history (`pulumi stack history --json`,
newest first: ``version``, ``kind``, ``result``, ``startTime``, ``endTime``; stack_history.go
``updateInfoJSON``) and, when the newest update failed, says so above the outputs and shows
the GPU verdict as STALE, with when it was read (``gpuTest.checkedAt``) and by which update.
Exit: 0, or 3 when the outputs are stale; 2 when the stack or the Pulumi CLI is not there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

UPDATE_KINDS = ("update",)  # the kinds that set stack outputs (refresh and preview do not)
LIFECYCLE_KINDS = (*UPDATE_KINDS, "destroy")  # a destroy after a failed update: nothing stale is left
SHOWN = ("version", "kind", "result", "startTime", "endTime")  # not environment or config (author, CI variables)
STALE = 3


class OutputsError(Exception):
    """The stack's outputs or history cannot be read: one line, exit 2."""


def pulumi_json(*args: str) -> object:
    try:
        # No stdin: a backend that wants a passphrase fails with a message instead of a hidden prompt.
        proc = subprocess.run(["pulumi", *args, "--json"], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OutputsError("the Pulumi CLI is not installed (https://www.pulumi.com/docs/install/)") from None
    if proc.returncode != 0:
        why = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        raise OutputsError(f"pulumi {' '.join(args)}: {why}")
    try:
        return json.loads(proc.stdout or "null")
    except json.JSONDecodeError as err:
        raise OutputsError(f"pulumi {' '.join(args)} printed no JSON ({err})") from None


def freshness(history: list[dict]) -> dict:
    """What the outputs belong to (pure): the newest update, and the newest that succeeded.

    ``current`` is false when the newest update failed (or is still running): the outputs are
    then those of ``outputsFrom``, an earlier update (None when no update ever succeeded).
    """
    entries = [h for h in history if isinstance(h, dict) and h.get("kind") in LIFECYCLE_KINDS]
    entries.sort(key=lambda h: h.get("version") if isinstance(h.get("version"), int) else -1, reverse=True)
    if not entries or entries[0].get("kind") == "destroy":
        return {"current": True, "latest": None, "outputsFrom": None}
    latest = {k: entries[0].get(k) for k in SHOWN}
    succeeded = next((h for h in entries if h.get("kind") in UPDATE_KINDS and h.get("result") == "succeeded"), None)
    return {
        "current": latest.get("result") == "succeeded",
        "latest": latest,
        "outputsFrom": {k: succeeded.get(k) for k in SHOWN} if succeeded else None,
    }


def _when(update: dict | None) -> str:
    if not update:
        return "no update that succeeded"
    return f"update {update.get('version', '?')} ({update.get('endTime') or update.get('startTime') or 'time unknown'})"


def annotate(outputs: dict, fresh: dict) -> dict:
    """The outputs with a stale GPU verdict marked as such (pure)."""
    if fresh["current"]:
        return outputs
    shown = dict(outputs)
    test = shown.get("gpuTest")
    if isinstance(test, dict) and "verdict" in test:
        shown["gpuTest"] = {
            **test,
            "verdict": (
                f"STALE: {test['verdict']} at {test.get('checkedAt', 'an unknown time')} by {_when(fresh['outputsFrom'])}; "
                f"the newest update, {_when(fresh['latest'])}, {fresh['latest'].get('result', 'did not finish')}"
            ),
        }
    return shown


def banner(fresh: dict) -> str:
    latest = fresh["latest"]
    kept = _when(fresh["outputsFrom"])
    return (
        f"STALE OUTPUTS: the newest `pulumi up`, {_when(latest)}, {latest.get('result') or 'did not finish'}; "
        f"Pulumi keeps the outputs of {kept}, the last that succeeded. The GPU verdict below is that update's, "
        "not the cluster's now: fix what `pulumi up` reported, then `make up` (or `make retest`). (A change the "
        "lifecycle guard refused moved nothing: the outputs then still describe the cluster.)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.outputs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--json", action="store_true", help="print {outputs, current, latest, outputsFrom} as JSON")
    args = parser.parse_args(argv)
    try:
        outputs = pulumi_json("stack", "output", "-s", args.stack)
        history = pulumi_json("stack", "history", "-s", args.stack, "--page-size", "20")
    except OutputsError as err:
        print(f"make outputs: {err}", file=sys.stderr)
        return 2
    fresh = freshness(history if isinstance(history, list) else [])
    shown = annotate(outputs if isinstance(outputs, dict) else {}, fresh)
    if args.json:
        json.dump({"outputs": shown, **fresh}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        if not fresh["current"]:
            print(banner(fresh) + "\n")
        for key, value in shown.items():
            print(f"{key}: {value if isinstance(value, str) else json.dumps(value)}")
    return 0 if fresh["current"] else STALE


if __name__ == "__main__":
    sys.exit(main())
