from django.apps import AppConfig


class RandomizationConfig(AppConfig):
    name = "randomization"
    verbose_name = "Randomization"

    def ready(self):
        # Dosing reads the allocated arm (kit contents) through trialsite.allocation, so that it
        # does not import this app.
        from randomization.selectors import allocated_arm
        from trialsite import allocation

        allocation.register(allocated_arm)
