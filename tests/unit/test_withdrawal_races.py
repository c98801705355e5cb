"""A withdrawal and an order racing for a new user's funds: whichever wins, neither deadlocks.

The first order or withdrawal of an asset creates the user's locked account. A withdrawal locks the
user's accounts (for its daily limit); if it held that lock while waiting for an order's insert of the
locked account, and the order then debited the available account, each would wait for the other.
"""

import threading
import time
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from accounts.models import Account, Asset, Withdrawal
from accounts.services import withdrawal_request
from core.errors import InsufficientFunds

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_withdrawal_waiting_for_an_orders_new_locked_account_does_not_deadlock(btc_usdt, make_user, fund):
    user = make_user()
    fund(user, "USDT", "500")
    usdt = Asset.objects.get(pk="USDT")
    available = Account.objects.get(user=user, asset=usdt, kind="available")
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)

    # The order's transaction, half way: it has inserted the locked account and not yet debited.
    order = psycopg.connect(**params)
    order.execute(
        "INSERT INTO accounts_account (user_id, asset_id, kind, balance, updated_at)"
        " VALUES (%s, 'USDT', 'locked', 0, %s)",
        (user.pk, timezone.now()),
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
    time.sleep(1.0)  # the withdrawal now waits for the order's insert of the locked account
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
