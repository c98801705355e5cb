"""Every invariant of the money rules, checked against the database as it is.

All checks read one consistent snapshot (a REPEATABLE READ transaction), so a run on a busy
exchange does not mistake a transaction in flight for a breach. Each problem names the account,
order, market or event at fault.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import Case, DecimalField, F, OuterRef, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Account, BalanceAdjustment, Deposit, LedgerEntry, LedgerLine, Withdrawal
from core import sql
from matching.engine import GENESIS_HASH, ChainCheck, ChainError, event_from_dict
from matching.models import Order
from settlement.models import Alert, ChainCheckpoint, EngineEvent, ReconciliationRun, SettlementCursor, Trade
from settlement.services import alert_raise

# A run reports at most this many problems per check; the count says how many there were.
_MAX_LISTED = 50
_ZERO = Value(Decimal(0), output_field=DecimalField(max_digits=38, decimal_places=18))


@dataclass
class Check:
    check: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    count: int = 0
    # What the check took, kept with the run: the checks that read the whole history grow with it.
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.count == 0

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self.problems) < _MAX_LISTED:
            self.problems.append(problem)


def _no_negative_balance() -> Check:
    result = Check("no balance is negative", checked=Account.objects.count())
    negative = Account.objects.filter(balance__lt=0).exclude(kind__in=Account.MAY_BE_NEGATIVE)
    for account in negative.select_related("user"):
        result.add(f"account {account.pk} ({account}) is {account.balance}")
    return result


def _ledger_sums_to_zero() -> Check:
    totals = LedgerLine.objects.values("asset_id").annotate(total=Sum("amount")).order_by("asset_id")
    result = Check("the ledger sums to zero per asset", checked=len(totals))
    for row in totals:
        if row["total"] != 0:
            result.add(f"asset {row['asset_id']} sums to {row['total']}")
    return result


def _balances_equal_lines() -> Check:
    lines = (
        LedgerLine.objects.filter(account=OuterRef("pk"))
        .order_by()
        .values("account")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    accounts = Account.objects.annotate(lines_total=Coalesce(Subquery(lines), _ZERO))
    result = Check("every balance equals the sum of its ledger lines", checked=accounts.count())
    for account in accounts.exclude(balance=F("lines_total")).select_related("user"):
        result.add(f"account {account.pk} ({account}) holds {account.balance}, its lines sum to {account.lines_total}")
    return result


def _locked_matches_commitments() -> Check:
    """A user's locked balance of an asset is exactly what their live orders and pending
    withdrawals of that asset still hold."""
    commitments: dict[tuple[int, str], Decimal] = {}
    orders = (
        Order.objects.filter(status__in=Order.LIVE_STATUSES)
        .annotate(asset=Case(When(side=Order.Side.BUY, then=F("market__quote_id")), default=F("market__base_id")))
        .values("user_id", "asset")
        .annotate(total=Sum("locked"))
        .order_by()
    )
    for row in orders:
        key = (row["user_id"], row["asset"])
        commitments[key] = commitments.get(key, Decimal(0)) + row["total"]
    withdrawals = (
        Withdrawal.objects.filter(status__in=Withdrawal.OPEN_STATUSES)
        .values("user_id", "asset_id")
        .annotate(total=Sum(F("amount") + F("fee")))
        .order_by()
    )
    for row in withdrawals:
        key = (row["user_id"], row["asset_id"])
        commitments[key] = commitments.get(key, Decimal(0)) + row["total"]

    locked = {
        (user_id, asset): balance
        for user_id, asset, balance in Account.objects.filter(kind=Account.Kind.LOCKED).values_list(
            "user_id", "asset_id", "balance"
        )
    }
    result = Check("locked equals what open orders and pending withdrawals hold", checked=len(locked))
    for key in sorted(set(locked) | set(commitments)):
        held, needed = locked.get(key, Decimal(0)), commitments.get(key, Decimal(0))
        if held != needed:
            result.add(f"user {key[0]} {key[1]}: locked {held}, orders and withdrawals hold {needed}")
    return result


def _posted(kind: str, account_kind: str, prefix: str) -> dict[int, Decimal]:
    """What ledger entries of `kind` moved on the system account of `account_kind`, per record id
    (their reference is `<prefix>:<id>`)."""
    rows = (
        LedgerLine.objects.filter(entry__kind=kind, account__kind=account_kind)
        .values("entry__reference")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    return {int(row["entry__reference"].removeprefix(f"{prefix}:")): row["total"] for row in rows}


def _movements_match_ledger() -> Check:
    """Money that crossed the exchange's edge, or was corrected by hand, is in the ledger exactly as
    its record says: every credited deposit once, every completed withdrawal once, every approved
    adjustment once, and nothing else."""
    expected = {
        "deposit": (
            dict(Deposit.objects.filter(status=Deposit.Status.CREDITED).values_list("pk", "amount")),
            {pk: -total for pk, total in _posted(LedgerEntry.Kind.DEPOSIT, Account.Kind.DEPOSITS, "deposit").items()},
        ),
        "withdrawal": (
            dict(Withdrawal.objects.filter(status=Withdrawal.Status.COMPLETED).values_list("pk", "amount")),
            _posted(LedgerEntry.Kind.WITHDRAWAL_SEND, Account.Kind.WITHDRAWALS, "withdrawal"),
        ),
        "adjustment": (
            dict(
                BalanceAdjustment.objects.filter(status=BalanceAdjustment.Status.APPROVED).values_list("pk", "amount")
            ),
            {
                pk: -total
                for pk, total in _posted(LedgerEntry.Kind.ADJUSTMENT, Account.Kind.ADJUSTMENTS, "adjustment").items()
            },
        ),
    }
    result = Check("deposits, withdrawals and adjustments match the ledger")
    for what, (records, posted) in expected.items():
        result.checked += len(records)
        for pk in sorted(set(records) | set(posted)):
            if records.get(pk) != posted.get(pk):
                result.add(f"{what} {pk}: its record says {records.get(pk)}, the ledger moved {posted.get(pk)}")
    return result


def _orders_consistent() -> Check:
    result = Check("orders hold what their state says", checked=Order.objects.count())
    overfilled = Order.objects.filter(quantity__isnull=False, filled__gt=F("quantity"))
    for order in overfilled:
        result.add(f"order {order.pk} filled {order.filled} of {order.quantity}")
    for order in Order.objects.filter(status=Order.Status.FILLED, quantity__isnull=False).exclude(filled=F("quantity")):
        result.add(f"order {order.pk} is filled with {order.filled} of {order.quantity}")
    return result


class ChainWalk(NamedTuple):
    """What a walk along one market's stored events found."""

    since: tuple[int, str] | None  # the (seq, hash) it started after; None: genesis
    checked: int  # events checked
    last: str  # hash of the last event read
    problems: list[str]
    # The last event up to which the whole chain is known to verify: the walk's start, or a later
    # event that came before its first problem (None: no event yet).
    verified: tuple[int, str] | None


def chain_check(market: str, since: tuple[int, str] | None = None) -> ChainWalk:
    """Walk one market's stored events from genesis, or from `since`, the (seq, hash) of an event an
    earlier walk verified: then only the events after it are checked, chained onto that hash, and the
    event stored at that seq must still carry it.

    Unlike settlement, which stops at the first bad link, this reports every one and goes on.
    """
    problems: list[str] = []
    start_seq, start_hash = since or (0, GENESIS_HASH)
    links = ChainCheck(market, start_seq, start_hash)
    verified = since
    anchored = since is None
    count = 0
    rows = EngineEvent.objects.filter(market=market, seq__gte=start_seq).order_by("seq")
    for seq, payload, digest in rows.values_list("seq", "payload", "hash").iterator(chunk_size=2000):
        if not anchored:
            anchored = True
            if seq == start_seq:
                if digest != start_hash:
                    problems.append(f"#{seq} changed since a run verified it")
                continue
            problems.append(f"#{start_seq} missing since a run verified it")
        count += 1
        if seq != links.seq + 1:
            problems.append(f"#{links.seq + 1}..#{seq - 1} missing")
            # The chain cannot be checked across a hole; carry on from the next stored event.
            links.restart(seq - 1)
        try:
            event = event_from_dict(payload, digest)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"#{seq} unreadable: {exc}")
            links.restart(seq)
            continue
        try:
            links.extend(event)
        except ChainError:
            problems.append(f"#{seq} does not chain onto #{seq - 1}")
            links.restart(seq, digest)
        if not problems:
            verified = (seq, digest)
    if not anchored:
        problems.append(f"#{start_seq} missing since a run verified it")
    return ChainWalk(since, count, links.last or "", problems, verified)


def _events_settled_once() -> Check:
    """Every event up to a market's cursor is stored and settled, none after it is, and the trades in
    the database are exactly the settled trade events."""
    cursors = list(SettlementCursor.objects.order_by("market"))
    result = Check("every engine event settled exactly once, no gap", checked=len(cursors))
    for cursor in cursors:
        events = EngineEvent.objects.filter(market=cursor.market)
        settled_range = events.filter(seq__lte=cursor.seq)
        if settled_range.count() != cursor.seq:
            result.add(f"{cursor.market}: {settled_range.count()} events stored up to #{cursor.seq}")
        unsettled = settled_range.filter(settled_at__isnull=True).order_by("seq").first()
        if unsettled is not None:
            result.add(f"{cursor.market}: event #{unsettled.seq} is before the cursor but not settled")
        early = events.filter(seq__gt=cursor.seq, settled_at__isnull=False).order_by("seq").first()
        if early is not None:
            result.add(f"{cursor.market}: event #{early.seq} is after the cursor but marked settled")
        if cursor.status != SettlementCursor.Status.OK:
            result.add(f"{cursor.market}: settlement is stopped ({cursor.status}) at #{cursor.seq}")
        trade_events = set(settled_range.filter(type="trade").values_list("seq", flat=True))
        trades = list(Trade.objects.filter(market_id=cursor.market).values_list("seq", flat=True))
        for seq in sorted(trade_events - set(trades)):
            result.add(f"{cursor.market}: trade event #{seq} has no trade")
        for seq in sorted(set(trades) - trade_events):
            result.add(f"{cursor.market}: trade #{seq} has no settled trade event")
    orphans = Trade.objects.exclude(market_id__in=[c.market for c in cursors])
    for trade in orphans:
        result.add(f"trade {trade.pk} in {trade.market_id} has no settlement cursor")
    return result


# The markets that have stored events, read off the (market, seq) index one market at a time: a
# DISTINCT reads every stored event, which cost a run from the checkpoints 85 ms at 300,000 events
# however few were new.
_EVENT_MARKETS_SQL = f"""
WITH RECURSIVE found(market) AS (
  (SELECT market FROM {sql.table(EngineEvent)} ORDER BY market LIMIT 1)
  UNION ALL
  SELECT (SELECT e.market FROM {sql.table(EngineEvent)} e WHERE e.market > found.market ORDER BY e.market LIMIT 1)
  FROM found WHERE found.market IS NOT NULL
)
SELECT market FROM found WHERE market IS NOT NULL
"""  # noqa: S608 - the table is the model's; there is no value in it


def event_markets() -> list[str]:
    """The markets with stored engine events, in name order."""
    with connection.cursor() as cursor:
        cursor.execute(_EVENT_MARKETS_SQL)
        return sorted(market for (market,) in cursor.fetchall())


def _hash_chains_verify(*, full: bool) -> tuple[Check, dict[str, ChainWalk]]:
    """Every market's chain, from genesis when `full`, otherwise from its checkpoint where it has
    one; `checked` counts the events read."""
    since = {} if full else {c.market: (c.seq, c.hash) for c in ChainCheckpoint.objects.all()}
    walks = {market: chain_check(market, since.get(market)) for market in event_markets()}
    result = Check("the engine's hash chain verifies", checked=sum(w.checked for w in walks.values()))
    for market, walk in walks.items():
        for problem in walk.problems:
            result.add(f"{market}: {problem}")
    return result, walks


CHECKS = (
    _no_negative_balance,
    _ledger_sums_to_zero,
    _balances_equal_lines,
    _locked_matches_commitments,
    _movements_match_ledger,
    _orders_consistent,
    _events_settled_once,
)


def _reconcile(*, full: bool) -> tuple[list[Check], dict[str, ChainWalk]]:
    """Every check on one consistent snapshot of the database, and each market's chain walk."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            # Inside a caller's transaction the caller's isolation applies instead.
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        checks = [_timed(check) for check in CHECKS]
        started = time.monotonic()
        chains, walks = _hash_chains_verify(full=full)
        chains.duration_ms = _ms_since(started)
        return [*checks, chains], walks


def reconciliation_checks(*, full: bool = True) -> list[Check]:
    """Run every check on one consistent snapshot of the database; change nothing. The hash chains
    are verified from genesis, or with `full` False from each market's checkpoint."""
    return _reconcile(full=full)[0]


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _timed(check: Callable[[], Check]) -> Check:
    started = time.monotonic()
    result = check()
    result.duration_ms = _ms_since(started)
    return result


def _checkpoints_move(walks: dict[str, ChainWalk]) -> None:
    """Each market's checkpoint to the last event its walk verified, with every event before it.

    A walk from genesis saw the whole chain of its snapshot: it sets the checkpoint, even back
    before a break it found, or removes it when nothing verified. A walk from a checkpoint moves it
    only if it is still the one the walk started from, so that a full run which meanwhile found a
    break before it is not undone.
    """
    now = timezone.now()
    for market, walk in walks.items():
        if walk.since is None and walk.verified is None:
            ChainCheckpoint.objects.filter(market=market).delete()
        elif walk.since is None:
            seq, digest = walk.verified
            ChainCheckpoint.objects.update_or_create(market=market, defaults={"seq": seq, "hash": digest})
        elif walk.verified != walk.since:
            (seq, digest), (since_seq, since_hash) = walk.verified, walk.since
            ChainCheckpoint.objects.filter(market=market, seq=since_seq, hash=since_hash).update(
                seq=seq, hash=digest, verified_at=now
            )


def reconciliation_run(*, full: bool = True) -> ReconciliationRun:
    """Run every check and keep the result for the admin; a failure opens an alert.

    The hash chains are verified from genesis when `full`, otherwise each from its market's
    checkpoint (from genesis where there is none); either way the checkpoints then move to the
    last event verified, never past a problem.
    """
    started = time.monotonic()
    checks, walks = _reconcile(full=full)
    ok = all(c.ok for c in checks)
    with transaction.atomic():
        run = ReconciliationRun.objects.create(
            ok=ok,
            full=full,
            checks=[{**asdict(c), "ok": c.ok} for c in checks],
            duration_ms=_ms_since(started),
        )
        _checkpoints_move(walks)
        if not ok:
            failed = ", ".join(c.check for c in checks if not c.ok)
            alert_raise(kind=Alert.Kind.RECONCILIATION, market="", message=f"reconciliation failed: {failed}")
    return run
