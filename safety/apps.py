from django.apps import AppConfig


class SafetyConfig(AppConfig):
    """Adverse events, serious adverse events and their reporting clock (issue 18)."""

    name = "safety"
    verbose_name = "Safety"
