"""A withdrawal and an order racing for a new user's funds: whichever wins, neither deadlocks.

A withdrawal locks the user's accounts of the asset (for its daily limit); an order placement locks
the same two accounts before it reads the balance. Both exist from the moment money first arrives
(`account_get` opens them together), and both transactions lock them in primary-key order, so one
waits for the other and neither holds a lock the other needs next.
"""

import threading
import time
from decimal import Decimal

import psycopg
import pytest
from django.db import connection

from accounts.models import Account, Asset, Withdrawal
from accounts.services import withdrawal_request
from core.errors import InsufficientFunds

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_withdrawal_waiting_for_an_orders_accounts_does_not_deadlock(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "500")
    usdt = Asset.objects.get(pk="USDT")
    available = Account.objects.get(user=user, asset=usdt, kind="available")
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)

    # The order's transaction, half way: it has locked the two accounts and not yet debited.
    order = psycopg.connect(**params)
    order.execute(
        "SELECT id FROM accounts_account WHERE user_id = %s AND asset_id = 'USDT' ORDER BY id FOR UPDATE", (user.pk,)
    )
    outcome: list[object] = []

    def withdraw() -> None:
        try:
            outcome.append(
                withdrawal_request(user=user, asset=usdt, amount=Decimal("499"), address="destination000001")
            )
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome.append(exc)
        finally:
            connection.close()

    racer = threading.Thread(target=withdraw)
    racer.start()
    time.sleep(1.0)  # the withdrawal now waits for the order's locks
    try:
        # The order debits the available account and commits; it must not wait for the withdrawal.
        order.execute("SET lock_timeout = '10s'")
        debited = order.execute(
            "UPDATE accounts_account SET balance = balance - 500 WHERE id = %s AND balance >= 500", (available.pk,)
        ).rowcount
        order.execute(
            "UPDATE accounts_account SET balance = balance + 500 WHERE user_id = %s AND kind = 'locked'", (user.pk,)
        )
        order.commit()
    finally:
        order.close()
        racer.join(timeout=30)
    assert debited == 1
    assert len(outcome) == 1 and isinstance(outcome[0], InsufficientFunds), outcome
    assert not Withdrawal.objects.exists()
