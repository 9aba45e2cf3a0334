from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from trialsite.protocol import load_protocol


class Command(BaseCommand):
    help = "Load (or reload) a protocol definition file: the trial, its arms, sites and rules."

    def add_arguments(self, parser):
        parser.add_argument("path", nargs="?", default=str(settings.PROTOCOL_FILE))

    def handle(self, *args, path, **options):
        try:
            trial = load_protocol(Path(path))
        except (OSError, ValidationError) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(
            f"Loaded {trial.nct_id}: {trial.arms.count()} arms, {trial.sites.count()} site(s), "
            f"target {trial.target_enrollment} participants"
        )
