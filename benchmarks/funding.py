"""Traders for the benchmarks that run the exchange's code in their own process: registered, and
credited the only way money enters, by custody's report of a confirmed deposit to their address.

Django must be set up before `trader_funded` is called; importing this module needs nothing.
"""

from __future__ import annotations

import secrets
from decimal import Decimal


def trader_funded(*, username: str, amounts: dict[str, str], tx_prefix: str):
    """A new trader holding `amounts` (asset symbol → amount) as confirmed deposits, one custody
    transaction each (`<tx_prefix>-<asset>`)."""
    from accounts.models import Asset
    from accounts.services import deposit_address_get, deposit_report, user_register

    user = user_register(username=username, password=secrets.token_hex(16), email="")
    for symbol, amount in amounts.items():
        asset = Asset.objects.get(pk=symbol)
        deposit_report(
            asset=asset,
            address=deposit_address_get(user=user, asset=asset).address,
            amount=Decimal(amount),
            tx_id=f"{tx_prefix}-{symbol}",
            confirmations=asset.deposit_confirmations,
        )
    return user
