from django.core.management.base import BaseCommand

from core.kafka import client


class Command(BaseCommand):
    help = "Create the Kafka topics with their configured partition counts (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        for topic, partitions in sorted(client.ensure_topics().items()):
            self.stdout.write(f"topic {topic}: {partitions} partitions")
