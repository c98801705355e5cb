"""An independent, deliberately plain encoder of the canonical event bytes.

It follows the layout written in docs/engine.md from each event's ``to_dict``
and shares no code with ``matching.engine.events``, so tests that compare the
two check the engine's fast per-shape encoders, its generic encoder and the
documented format against one another.
"""

from typing import Any

from matching.engine import Event

SIDES = ["buy", "sell"]
ORDER_TYPES = ["limit", "market"]
TIMES_IN_FORCE = ["GTC", "IOC", "FOK"]
STP_MODES = ["cancel_incoming", "cancel_resting", "cancel_both"]
REQUESTS = ["new", "cancel", "cancel_all", "add_market", "halt_market", "resume_market"]
CANCEL_REASONS = ["user", "ioc", "self_trade", "no_liquidity"]
REJECT_REASONS = [
    "duplicate_order_id",
    "unknown_market",
    "market_halted",
    "post_only_would_cross",
    "fok_not_fillable",
    "unknown_order",
    "not_owner",
    "already_done",
    "market_exists",
    "invalid",
]

INT, OPTIONAL, BOOL = "int", "optional", "bool"

# Type code and the fields after market, seq and ts, in declaration order,
# each with its kind or its list of enum values.
LAYOUT: dict[str, tuple[int, list[tuple[str, Any]]]] = {
    "market_added": (1, []),
    "market_halted": (2, []),
    "market_resumed": (3, []),
    "accepted": (
        4,
        [
            ("order_id", INT),
            ("user_id", INT),
            ("side", SIDES),
            ("order_type", ORDER_TYPES),
            ("price", OPTIONAL),
            ("quantity", OPTIONAL),
            ("quote_quantity", OPTIONAL),
            ("time_in_force", TIMES_IN_FORCE),
            ("post_only", BOOL),
            ("stp", STP_MODES),
        ],
    ),
    "trade": (
        5,
        [
            ("maker_order_id", INT),
            ("maker_user_id", INT),
            ("taker_order_id", INT),
            ("taker_user_id", INT),
            ("taker_side", SIDES),
            ("price", INT),
            ("quantity", INT),
            ("maker_remaining", INT),
            ("taker_remaining", OPTIONAL),
            ("taker_remaining_quote", OPTIONAL),
        ],
    ),
    "cancelled": (
        6,
        [
            ("order_id", INT),
            ("user_id", INT),
            ("remaining", OPTIONAL),
            ("remaining_quote", OPTIONAL),
            ("reason", CANCEL_REASONS),
        ],
    ),
    "rejected": (
        7,
        [("order_id", OPTIONAL), ("user_id", OPTIONAL), ("request", REQUESTS), ("reason", REJECT_REASONS)],
    ),
    "done": (8, [("order_id", INT), ("user_id", INT), ("reason", ["filled"])]),
}


def reference_canonical(event: Event) -> bytes:
    d = event.to_dict()
    code, layout = LAYOUT[d["type"]]
    descriptor = []
    numbers = [d["seq"], d["ts"]]
    for name, kind in layout:
        value = d[name]
        if kind == INT:
            numbers.append(value)
        elif kind == OPTIONAL:
            descriptor.append(0 if value is None else 1)
            numbers.append(0 if value is None else value)
        elif kind == BOOL:
            assert type(value) is bool
            descriptor.append(int(value))
        else:
            descriptor.append(kind.index(value))
    market = d["market"].encode("utf-8", "surrogatepass")
    if all(0 <= n < 2**64 for n in numbers):
        body = b"".join(n.to_bytes(8, "little") for n in numbers)
    else:
        code += 0x80
        body = b"".join(str(n).encode() + b";" for n in numbers)
    return bytes([code]) + str(len(market)).encode() + b":" + market + bytes(descriptor) + body
