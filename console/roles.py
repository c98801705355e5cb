"""Staff roles: one Django group each, with exactly these permissions.

This table is what the roles are. Migrations `console/0001_roles.py`, `0002_roles_see_history.py`
and `0003_markets_see_chain_checkpoints.py` hold a literal copy of it
(a migration must keep doing what it did when it was written, whatever this module says later);
`tests/console/test_roles.py` fails if the groups in the database and this table ever differ, so a
change here comes with a migration that applies it. README ("Staff roles and sign-in") and
docs/operations.md describe the roles in words.

Permissions are `app_label.codename`, the form `User.has_perm` takes.
"""

SUPPORT = (
    "accounts.view_user",
    "accounts.view_account",
    "accounts.view_asset",
    "matching.view_market",
    "matching.view_order",
    "settlement.view_trade",
    "accounts.view_deposit",
    "accounts.view_withdrawal",
    "accounts.view_depositaddress",
)

FINANCE = (
    *SUPPORT,
    "accounts.view_ledgerentry",
    "accounts.view_ledgerline",
    "accounts.view_balanceadjustment",
    "accounts.view_auditlog",
    "accounts.add_asset",
    "accounts.change_asset",
    "accounts.approve_withdrawal",
    "accounts.release_deposit",
    "accounts.propose_adjustment",
    "accounts.approve_adjustment",
    "accounts.export_deposit",
    "accounts.export_withdrawal",
    "accounts.export_ledgerline",
    "settlement.export_trade",
    "pghistory.view_events",
)

MARKETS = (
    "accounts.view_user",
    "accounts.view_asset",
    "matching.view_market",
    "matching.add_market",
    "matching.change_market",
    "matching.halt_market",
    "matching.view_order",
    "matching.cancel_order",
    "settlement.view_trade",
    "settlement.view_engineevent",
    "settlement.view_settlementcursor",
    "settlement.view_consumeroffset",
    "settlement.view_alert",
    "settlement.resolve_alert",
    "matching.view_outboxmessage",
    "matching.view_enginesnapshot",
    "settlement.view_reconciliationrun",
    "settlement.view_chaincheckpoint",
    "pghistory.view_events",
)

# Who signed in, from where, and who failed: django-axes' records.
LOGIN_RECORDS = (
    "axes.view_accessattempt",
    "axes.view_accesslog",
    "axes.view_accessfailurelog",
)

COMPLIANCE = (
    "accounts.view_user",
    "accounts.restrict_user",
    "accounts.view_userrestriction",
    "accounts.view_account",
    "matching.view_order",
    "settlement.view_trade",
    "accounts.view_deposit",
    "accounts.view_withdrawal",
    "accounts.view_ledgerentry",
    "accounts.view_ledgerline",
    "accounts.view_auditlog",
    "accounts.export_auditlog",
    "accounts.view_balanceadjustment",
    "accounts.view_depositaddress",
    "pghistory.view_events",
    *LOGIN_RECORDS,
)

ADMIN = (
    "accounts.view_user",
    "accounts.add_user",
    "accounts.change_user",
    "accounts.manage_staff",
    "auth.view_group",
    "auth.change_group",
    "auth.view_permission",
    "accounts.view_auditlog",
    *LOGIN_RECORDS,
    # Deleting a user's failed attempts is what unlocks them (audited, console/admin.py).
    "axes.delete_accessattempt",
    "otp_totp.view_totpdevice",
    # Devices go only through the audited "Reset second factor" action on users (manage_staff);
    # the device list itself is read-only.
    "otp_totp.delete_totpdevice",
    "pghistory.view_events",
)

ROLES: dict[str, tuple[str, ...]] = {
    "support": SUPPORT,
    "finance": FINANCE,
    "markets": MARKETS,
    "compliance": COMPLIANCE,
    "admin": ADMIN,
}

PURPOSES: dict[str, str] = {
    "support": "reads users, orders, balances, deposits and withdrawals; changes nothing",
    "finance": "approves withdrawals, releases deposits, proposes and approves balance adjustments, edits assets",
    "markets": "creates, changes and halts markets, cancels orders, resolves alerts",
    "compliance": "restricts users, reads the ledger, the audit log and the login records",
    "admin": "manages staff accounts, their roles and second factors, unlocks locked-out logins",
}
