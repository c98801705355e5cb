from django.apps import AppConfig


class SettlementConfig(AppConfig):
    name = "settlement"
    verbose_name = "Settlement"

    def ready(self) -> None:
        # The matching worker reads settlement's progress through this, since matching, the layer
        # below, imports nothing from settlement. Models load only once apps are ready, hence here.
        from matching.progress import settlement_progress_register
        from settlement import selectors

        settlement_progress_register(selectors)
