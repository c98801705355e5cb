"""A stand-in for custody in development: it plays the chain through custody's own signed webhooks.

It talks to the exchange over HTTP only, as a custody provider would, and signs every request with
the custody secret. Every block (`--block-seconds`) it:

- confirms declared deposits: a deposit the user declared is "seen" on the chain and gains one
  confirmation per block, reported each time, until the exchange credits or holds it;
- sends approved withdrawals: a fully approved withdrawal is reported `sent` with a made-up chain
  transaction, and `completed` a block later. A withdrawal to an address containing "dead" (the
  usual burn address, 0x...dEaD) is reported `failed` instead, to show that path.

It keeps no state of its own: everything it needs it reads back from the exchange's custody
endpoints, so it can be stopped and started at any time. It refuses to run in production.
"""

import hashlib
import json
import time

import requests
import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.custody import SIGNATURE_HEADER, signature_header
from core.worker import LoopWorker

log = structlog.get_logger(__name__)


def made_up_tx(*parts: object) -> str:
    return "0x" + hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()


class Simulator(LoopWorker):
    name = "custody_simulator"

    def __init__(self, *, api: str, block_seconds: float) -> None:
        super().__init__()
        self.api = api.rstrip("/") + "/"
        self.block_seconds = block_seconds
        self.secret = settings.CUSTODY_WEBHOOK_SECRETS[0]
        self.http = requests.Session()

    def call(self, method: str, path: str, body: dict | None = None) -> requests.Response:
        raw = json.dumps(body).encode() if body is not None else b""
        headers = {
            SIGNATURE_HEADER: signature_header(raw, secret=self.secret, timestamp=int(time.time())),
            "Content-Type": "application/json",
        }
        answer = self.http.request(method, self.api + path, data=raw, headers=headers, timeout=10)
        if answer.status_code >= 500 or answer.status_code == 401:
            answer.raise_for_status()
        return answer

    def step(self) -> None:
        for deposit in self.call("GET", "custody/deposits/").json():
            tx_id = deposit["tx_id"] or made_up_tx("deposit", deposit["id"])
            answer = self.call(
                "POST",
                "custody/deposits/",
                {
                    "asset": deposit["asset"],
                    "address": deposit["address"],
                    "amount": deposit["amount"],
                    "tx_id": tx_id,
                    "confirmations": deposit["confirmations"] + 1,
                },
            )
            log.info("custody_deposit_reported", deposit=deposit["id"], tx_id=tx_id, answer=answer.status_code)
        for withdrawal in self.call("GET", "custody/withdrawals/").json():
            if "dead" in withdrawal["address"].lower():
                news = {"withdrawal_id": withdrawal["id"], "status": "failed"}
            elif withdrawal["status"] == "sent":
                news = {"withdrawal_id": withdrawal["id"], "status": "completed", "tx_id": withdrawal["tx_id"]}
            else:
                news = {
                    "withdrawal_id": withdrawal["id"],
                    "status": "sent",
                    "tx_id": made_up_tx("out", withdrawal["id"]),
                }
            answer = self.call("POST", "custody/withdrawals/", news)
            log.info("custody_withdrawal_reported", **news, answer=answer.status_code)
        self.pause(self.block_seconds)


class Command(BaseCommand):
    help = "Play custody and the chain in development: confirm declared deposits, send approved withdrawals."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--api",
            default=None,
            help="The exchange's API (default: CUSTODY_SIMULATOR_API, else http://127.0.0.1:$PORT/api/).",
        )
        parser.add_argument("--block-seconds", type=float, default=None, help="Seconds between blocks (default 1).")

    def handle(self, *args: object, **options: object) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "the custody simulator credits deposits nobody sent: refused with EXCHANGE_ENV=production"
            )
        api = options["api"] or settings.CUSTODY_SIMULATOR_API
        block = options["block_seconds"] or settings.CUSTODY_SIMULATOR_BLOCK_SECONDS
        log.info("custody_simulator_started", api=api, block_seconds=block)
        Simulator(api=api, block_seconds=block).run()
