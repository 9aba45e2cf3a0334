from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from trialsite.protocol import ProtocolError, check_file, load_protocol_file


class Command(BaseCommand):
    help = (
        "Load (or reload) a protocol file: the trial, its arms, sites and rules. With --check, only "
        "validate the file and list every mistake by its path; nothing is written."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "path", nargs="?", help="A protocol file; without one, every file in PROTOCOLS_DIR (protocols/)."
        )
        parser.add_argument("--check", action="store_true", help="Validate the file without loading it.")

    def handle(self, *args, path, check, **options):
        if path is None:
            for each in sorted(Path(settings.PROTOCOLS_DIR).glob("*.toml")):
                self.handle(path=str(each), check=check)
            return
        try:
            if check:
                protocol = check_file(Path(path))
            else:
                report = load_protocol_file(Path(path))
        except OSError as error:
            raise CommandError(f"{path}: {error.strerror}") from None
        except ProtocolError as error:
            problems = [f"{path}: {len(error.errors)} problem(s)", *error.errors]
            if not error.cross_checked:
                # Otherwise an author fixes these and is surprised by a second, different list.
                problems.append(
                    "The rules that relate one part of the file to another (kit types, forms' visits, "
                    "block sizes, ...) are checked once these are fixed."
                )
            raise CommandError("\n".join(problems)) from None
        if check:
            self.stdout.write(
                f"{path}: valid. {protocol.trial.nct_id} version {protocol.trial.protocol_version}: "
                f"{len(protocol.arms)} arms, {len(protocol.sites)} site(s), "
                f"randomization by {protocol.randomization.method.replace('_', ' ')}"
            )
            return
        trial = report.trial
        self.stdout.write(
            f"Loaded {trial.nct_id}: {trial.arms.count()} arms, {trial.sites.count()} site(s), "
            f"target {trial.target_enrollment} participants"
        )
        for change in report.changes:
            self.stdout.write(f"  {change}")
