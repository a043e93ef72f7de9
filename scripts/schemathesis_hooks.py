"""Hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

POST /v1/txn has two rules JSON Schema cannot state (docs/openapi.yaml says them in prose):
a key may be written (put or delete) at most once per branch, and a transaction holds at most
MICRONODE_TXN_MAX_OPS (64) compares and ops in all. The server answers 400 to a body that
breaks either, which is right, but such a body still matches the schema, so the
positive_data_acceptance check would call that 400 a failure. Generated bodies that break
them are dropped here; every other body is sent as generated.
"""

import schemathesis

MAX_OPS = 64


def _branch_writes_a_key_twice(ops):
    seen = set()
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("put", "delete"):
            continue
        key = (op.get("bucket"), op.get("key"))
        if not all(isinstance(part, str) for part in key):
            continue
        if key in seen:
            return True
        seen.add(key)
    return False


@schemathesis.hook("filter_body").apply_to(method="POST", path="/v1/txn")
def txn_rules_json_schema_cannot_state(ctx, body):
    if not isinstance(body, dict):
        return True
    parts = [body.get(name) for name in ("if", "then", "else")]
    lists = [part for part in parts if isinstance(part, list)]
    if sum(len(part) for part in lists) > MAX_OPS:
        return False
    return not any(
        _branch_writes_a_key_twice(body.get(name))
        for name in ("then", "else")
        if isinstance(body.get(name), list)
    )
