"""What every client script reports with: one "ok" line per check, and the first failure
ends the script with a message saying what was got and what was wanted."""

import sys


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def ok(name):
    print(f"ok   {name}", flush=True)
