"""Commands accepted by the matching engine.

Every command validates itself on construction, so an object of one of these
types is always well formed and ``Engine.apply`` never has to defend against
wrong types.  ``command_from_dict`` is the parser for the wire form produced by
``to_dict``; it raises ``ValueError`` for anything malformed.
"""

from dataclasses import dataclass
from typing import Any

SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")
TIMES_IN_FORCE = ("GTC", "IOC", "FOK")
STP_MODES = ("cancel_incoming", "cancel_resting", "cancel_both")


def _check_int(owner: str, name: str, value: object, minimum: int) -> None:
    # type() rather than isinstance(): bool is an int subclass and must not
    # slip through as a quantity or an id.
    if type(value) is not int:
        raise ValueError(f"{owner}.{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value}")


def _check_optional_int(owner: str, name: str, value: object, minimum: int) -> None:
    if value is not None:
        _check_int(owner, name, value, minimum)


def _check_market(owner: str, value: object) -> None:
    if type(value) is not str:
        raise ValueError(f"{owner}.market must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{owner}.market must not be empty")


def _check_choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    if type(value) is not str or value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True, slots=True)
class NewOrder:
    market: str
    order_id: int
    user_id: int
    side: str
    order_type: str
    price: int | None
    quantity: int | None
    quote_quantity: int | None
    time_in_force: str
    post_only: bool
    stp: str
    ts: int

    def __post_init__(self) -> None:
        owner = "NewOrder"
        _check_market(owner, self.market)
        _check_int(owner, "order_id", self.order_id, 0)
        _check_int(owner, "user_id", self.user_id, 0)
        _check_choice(owner, "side", self.side, SIDES)
        _check_choice(owner, "order_type", self.order_type, ORDER_TYPES)
        _check_optional_int(owner, "price", self.price, 1)
        _check_optional_int(owner, "quantity", self.quantity, 1)
        _check_optional_int(owner, "quote_quantity", self.quote_quantity, 1)
        _check_choice(owner, "time_in_force", self.time_in_force, TIMES_IN_FORCE)
        if type(self.post_only) is not bool:
            raise ValueError(f"NewOrder.post_only must be a bool, got {type(self.post_only).__name__}")
        _check_choice(owner, "stp", self.stp, STP_MODES)
        _check_int(owner, "ts", self.ts, 0)
        # Only the shape of the order is checked here.  Well-formed but
        # contradictory instructions (a GTC or post-only market order, a
        # post-only IOC/FOK) are the engine's to reject, with reason "invalid".
        if self.order_type == "limit":
            if self.price is None:
                raise ValueError("NewOrder.price is required for a limit order")
            if self.quantity is None:
                raise ValueError("NewOrder.quantity is required for a limit order")
            if self.quote_quantity is not None:
                raise ValueError("NewOrder.quote_quantity is only allowed on a market buy")
            return
        if self.price is not None:
            raise ValueError("NewOrder.price must be None for a market order")
        if self.side == "sell":
            if self.quantity is None or self.quote_quantity is not None:
                raise ValueError("a market sell needs quantity and no quote_quantity")
        elif (self.quantity is None) == (self.quote_quantity is None):
            raise ValueError("a market buy needs exactly one of quantity or quote_quantity")

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "new",
            "market": self.market,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "side": self.side,
            "order_type": self.order_type,
            "price": self.price,
            "quantity": self.quantity,
            "quote_quantity": self.quote_quantity,
            "time_in_force": self.time_in_force,
            "post_only": self.post_only,
            "stp": self.stp,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class CancelOrder:
    market: str
    order_id: int
    user_id: int
    ts: int

    def __post_init__(self) -> None:
        _check_market("CancelOrder", self.market)
        _check_int("CancelOrder", "order_id", self.order_id, 0)
        _check_int("CancelOrder", "user_id", self.user_id, 0)
        _check_int("CancelOrder", "ts", self.ts, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "cancel",
            "market": self.market,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "ts": self.ts,
        }


@dataclass(frozen=True, slots=True)
class CancelAll:
    market: str
    user_id: int
    ts: int

    def __post_init__(self) -> None:
        _check_market("CancelAll", self.market)
        _check_int("CancelAll", "user_id", self.user_id, 0)
        _check_int("CancelAll", "ts", self.ts, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "cancel_all", "market": self.market, "user_id": self.user_id, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class AddMarket:
    market: str
    ts: int

    def __post_init__(self) -> None:
        _check_market("AddMarket", self.market)
        _check_int("AddMarket", "ts", self.ts, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "add_market", "market": self.market, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class HaltMarket:
    market: str
    ts: int

    def __post_init__(self) -> None:
        _check_market("HaltMarket", self.market)
        _check_int("HaltMarket", "ts", self.ts, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "halt_market", "market": self.market, "ts": self.ts}


@dataclass(frozen=True, slots=True)
class ResumeMarket:
    market: str
    ts: int

    def __post_init__(self) -> None:
        _check_market("ResumeMarket", self.market)
        _check_int("ResumeMarket", "ts", self.ts, 0)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "resume_market", "market": self.market, "ts": self.ts}


Command = NewOrder | CancelOrder | CancelAll | AddMarket | HaltMarket | ResumeMarket

COMMAND_TYPES: dict[str, type[Command]] = {
    "new": NewOrder,
    "cancel": CancelOrder,
    "cancel_all": CancelAll,
    "add_market": AddMarket,
    "halt_market": HaltMarket,
    "resume_market": ResumeMarket,
}

_FIELDS: dict[str, tuple[str, ...]] = {name: tuple(cls.__dataclass_fields__) for name, cls in COMMAND_TYPES.items()}


def command_from_dict(d: dict[str, Any]) -> Command:
    """Parse the ``to_dict`` form of a command; every key is required, none extra."""
    try:
        kind = d.get("type")
    except AttributeError:
        raise ValueError(f"a command must be a dict, got {type(d).__name__}") from None
    if type(kind) is not str or kind not in COMMAND_TYPES:
        raise ValueError(f"unknown command type {kind!r}; expected one of {', '.join(COMMAND_TYPES)}")
    names = _FIELDS[kind]
    missing = [name for name in names if name not in d]
    if missing:
        raise ValueError(f"{kind!r} command is missing key(s): {', '.join(missing)}")
    extra = sorted(str(key) for key in d if key != "type" and key not in names)
    if extra:
        raise ValueError(f"{kind!r} command has unexpected key(s): {', '.join(extra)}")
    return COMMAND_TYPES[kind](**{name: d[name] for name in names})
