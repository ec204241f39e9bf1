"""Sensitive names are redacted in locals, dict keys and attributes at any depth; users can add
identifiers and exclude defaults."""
from ldbg_testlib import FAST, SETTINGS_FAST, SINK, arm, h, line_of, result


class Creds:
    def __init__(self):
        self.username = "ann"
        self.apiKey = "k-123"
        self.nested = {"refresh_token": "r", "ok": 1, "inner": {"Authorization": "Bearer x"}}


def login(password, user_pin, spinner, iban):
    creds = Creds()
    headers = {"Cookie": "c=1", "X-CSRF-Token": "t", "Accept": "json"}
    db_password_hash = "h"
    author = "bob"
    marker = 1  # BP:login
    return marker


def main():
    line = line_of(__file__, "# BP:login")
    bp = [{"id": "red", "file": "redaction.py", "line": line, "limits": FAST}]
    arm(bp, SETTINGS_FAST)
    login("hunter2", 1234, "spin", "DE00")
    default = SINK.hits("red")[0]
    SINK.clear()
    arm(bp, dict(SETTINGS_FAST, redact_add=["iban"], redact_exclude=["PIN"]))
    login("hunter2", 1234, "spin", "DE00")
    custom = SINK.hits("red")[0]
    h.set_breakpoints([])
    result({"default": default["$locals_variables"], "default_redacted": default.get("$redacted"),
            "custom": custom["$locals_variables"], "custom_redacted": custom.get("$redacted")})


main()
