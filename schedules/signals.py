"""What other apps hear from the schedule, so that this app imports none of them."""

from django.dispatch import Signal

# Sent inside the transaction that created the visits (the plan at randomization, or one
# unscheduled visit) with `visits` and `participant`: a receiver writes what follows from them
# (the reminders outbox) in the same transaction, so nothing is created without it.
visits_created = Signal()
