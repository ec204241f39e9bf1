"""The original libdebugger quick start against the project's PostHog test server.

Run in a virtual environment holding the libdebugger wheel and the real `posthog` package.
The environment gives the test server's URL and keys (POSTHOG_HOST, POSTHOG_API_KEY,
POSTHOG_PERSONAL_API_KEY) and the breakpoint id the server serves (LDBG_BREAKPOINT_ID).
Prints `RESULT <json>`: the manager's status after the calls.
"""

import json
import os
import sys
import time


def checkout(n):
    cart = {"items": n, "coupon": "WINTER"}
    secret_token = "s3cr3t-value"
    total = n * 10
    return total, cart, secret_token  # BP:quickstart


# --- the quick start, as documented (posthog >= 6 takes the project key positionally) ---
from posthog import Posthog
from libdebugger import LiveDebuggerManager

client = Posthog(
    os.environ["POSTHOG_API_KEY"],
    personal_api_key=os.environ["POSTHOG_PERSONAL_API_KEY"],
    host=os.environ["POSTHOG_HOST"],
)
debugger = LiveDebuggerManager(client=client, poll_interval=30)
debugger.start()
# --- ... the application runs: wait (bounded) until the breakpoint is armed, then work ---
wanted = os.environ["LDBG_BREAKPOINT_ID"]
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    if any(
        b["id"] == wanted and b.get("status") == "armed"
        for b in debugger.status()["breakpoints"]
    ):
        break
    time.sleep(0.01)
else:
    print("not armed in time:", json.dumps(debugger.status()), file=sys.stderr)
    sys.exit(2)
for n in range(5):
    checkout(n)
debugger.flush()
status = debugger.status()
debugger.stop()
client.shutdown()
# --- end of the quick start ---
print("RESULT " + json.dumps({
    "status": status,
    "breakpoints": [b.__dict__ for b in debugger.breakpoints],
    "enabled_after_stop": debugger.enabled,
}))
