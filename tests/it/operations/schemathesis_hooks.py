"""schemathesis hooks for `operations::openapi`: the check that a refused request (4xx)
leaves the compute's seq and phase as they were, and a cap on long-polls.

Before each call the compute is let settle (no step in flight: the same seq and phase twice,
50 ms apart, or once if unchanged since the last call, in a phase that waits), its state noted; right after the call it is read again.
"""

import json
import os
import time
import urllib.request

import schemathesis

BASE = os.environ["COMPUTE_CTL_URL"]
SETTLED_PHASES = ("empty", "running", "failed")
SETTLE_SECONDS_MAX = 60
BEFORE = {}
AFTER = {}
LAST = {}


def state():
    with urllib.request.urlopen(BASE + "/state", timeout=10) as answer:
        view = json.load(answer)
    return view["seq"], view["phase"]


def settle():
    last = LAST.get("after")
    deadline = time.monotonic() + SETTLE_SECONDS_MAX
    while time.monotonic() < deadline:
        now = state()
        if now == last and now[1] in SETTLED_PHASES:
            return now
        last = now
        time.sleep(0.05)
    raise AssertionError(f"the compute did not settle within {SETTLE_SECONDS_MAX} s: {last}")


@schemathesis.hook
def map_query(context, query):
    # GET /journal?wait=N long-polls up to 60 s when nothing new comes: keep the run short.
    if query and "wait" in query:
        query["wait"] = 0
    return query


@schemathesis.hook
def before_call(context, case, **kwargs):
    BEFORE["state"] = settle()


@schemathesis.hook
def after_call(context, case, response):
    after = state()
    LAST["after"] = after
    AFTER[id(response)] = (BEFORE.get("state"), after)


@schemathesis.check
def refused_requests_change_nothing(ctx, response, case):
    if not 400 <= response.status_code < 500:
        return None
    before, after = AFTER.get(id(response), (None, None))
    if before is None:
        return None
    if before != after:
        raise AssertionError(
            f"{case.method} {case.path} was refused ({response.status_code}) "
            f"but seq and phase went from {before} to {after}"
        )
    return None
