"""schemathesis hooks for tests/tests/admin_fuzz.rs: valid values that
would make the run itself take minutes are brought down to small valid
ones, so each case stays a positive one; values the document forbids go
out as generated, so the refusals are still tested.

- `POST /api/v1/load-test` may ask for up to 10,000,000 records, produced
  before it answers: minutes in a debug build, past any request timeout,
  and gigabytes on the test broker. Counts above LOAD_TEST_LIMIT become it.
- The `slow_consumer_ms` fault (up to 60,000) makes the stage sleep that
  long per consumed message, in one uninterruptible sleep per batch, which
  shutdown then waits out. Values above SLOW_CONSUMER_LIMIT become it.
"""

import schemathesis

LOAD_TEST_LIMIT = 5_000
LOAD_TEST_MAXIMUM = 10_000_000
SLOW_CONSUMER_LIMIT = 1
SLOW_CONSUMER_MAXIMUM = 60_000
WITH_FAULT = {
    "/api/v1/start",
    "/api/v1/fault",
    "/api/v1/kafka-demo/start",
    "/api/v1/kafka-demo/fault",
}


def _clamp(container, key, limit, maximum):
    """Brings a valid integer `container[key]` above `limit` down to it."""
    if not isinstance(container, dict):
        return
    value = container.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if limit < value <= maximum and float(value).is_integer():
        container[key] = type(value)(limit)


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if not isinstance(case.body, dict):
        return
    if path == "/api/v1/load-test":
        _clamp(case.body, "count", LOAD_TEST_LIMIT, LOAD_TEST_MAXIMUM)
    elif path in WITH_FAULT:
        _clamp(case.body.get("fault"), "slow_consumer_ms", SLOW_CONSUMER_LIMIT, SLOW_CONSUMER_MAXIMUM)
