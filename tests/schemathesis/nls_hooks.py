"""schemathesis hooks for tests/schemathesis/run.sh (loaded through SCHEMATHESIS_HOOKS).

A license's `expires_at` is bounded in time (docs/api.md): from 1970-01-01 and before
2200-01-01 UTC everywhere, and after the server's clock on create and renew (400
`invalid_request` otherwise). JSON Schema cannot bound a date-time, so a generated expiry
outside its operation's window is moved to the same instant a year from now: the request stays
what the fuzzer meant (a schema-valid date-time, or a negative case that is negative for another
reason), and the server must accept every positive one. Nothing else is changed.
"""

from datetime import datetime, timedelta, timezone

import schemathesis

EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
BEFORE = datetime(2200, 1, 1, tzinfo=timezone.utc)

def _in_window(value, future_only):
    if not isinstance(value, str):
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return value  # not a date-time: a negative case, left as it is
    if parsed.tzinfo is None:
        return value
    now = datetime.now(timezone.utc)
    in_window = now < parsed < BEFORE if future_only else EARLIEST <= parsed < BEFORE
    if in_window:
        return value
    return (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")


def _expiry_moved(case, future_only):
    if isinstance(case.body, dict) and "expires_at" in case.body:
        case.body = {**case.body, "expires_at": _in_window(case.body["expires_at"], future_only)}
    return case


# `map_case` (which the coverage phase goes through too, unlike `map_body`), on these three
# operations only: applied to every operation it made the fuzzing phase ten times slower.
@schemathesis.hook("map_case").apply_to(name=["POST /v1/licenses", "POST /v1/licenses/{id}/renew"])
def expiry_after_now(context, case):
    return _expiry_moved(case, future_only=True)


@schemathesis.hook("map_case").apply_to(name="PATCH /v1/licenses/{id}")
def expiry_in_range(context, case):
    return _expiry_moved(case, future_only=False)
