import datetime

from django.core.management.base import BaseCommand, CommandError

from dosing import kitlist
from dosing.models import KitList
from dosing.services import kit_contents_by_type
from trialsite.models import Trial


def lot_argument(text: str) -> tuple[tuple[str, str], tuple[str, datetime.date]]:
    try:
        kit_type, content, lot, expiry = text.split(":")
        return (kit_type, content), (lot, datetime.date.fromisoformat(expiry))
    except ValueError:
        raise CommandError(f"--lot {text!r}: expected TYPE:CONTENT:LOT:YYYY-MM-DD") from None


class Command(BaseCommand):
    help = (
        "Print the kit list a seed gives, as CSV (the import format), with the same generator the "
        "application uses; with --check ID, compare its SHA-256 with the stored kit list's. An auditor "
        "re-derives a generated kit list with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", required=True)
        parser.add_argument("--packaging-lot", required=True)
        parser.add_argument("--kits-per-type", type=int, required=True)
        parser.add_argument(
            "--lot",
            action="append",
            default=[],
            help="TYPE:CONTENT:LOT:YYYY-MM-DD, once per kit type and content (e.g. VIAL:active:LOT-24A:2028-01-31)",
        )
        parser.add_argument("--trial", help="NCT id; default: the only trial loaded")
        parser.add_argument("--check", type=int, help="id of a stored kit list to compare with")

    def handle(self, *args, seed, packaging_lot, kits_per_type, lot, trial=None, check=None, **options):
        trials = Trial.objects.all() if trial is None else Trial.objects.filter(nct_id=trial)
        if trials.count() != 1:
            raise CommandError("Name the trial with --trial (or load exactly one protocol).")
        trial = trials.get()
        kit_types = list(trial.protocol.kit_types)
        lots = dict(lot_argument(text) for text in lot)
        contents_by_type = kit_contents_by_type(trial)
        missing = [f"{t}:{c}" for t in kit_types for c in sorted(contents_by_type.get(t, ())) if (t, c) not in lots]
        if missing:
            raise CommandError(f"--lot is missing for {', '.join(missing)}")
        if kits_per_type <= 0:
            raise CommandError("--kits-per-type must be positive")
        planned = kitlist.generate(
            seed=seed,
            packaging_lot=packaging_lot,
            kits_per_type=kits_per_type,
            lots=lots,
            kit_types=kit_types,
            contents_by_type=contents_by_type,
        )
        text = kitlist.to_csv(planned)
        digest = kitlist.sha256(text)
        self.stdout.write(text, ending="")
        self.stderr.write(f"SHA-256 {digest}")
        if check is not None:
            stored = KitList.objects.filter(pk=check, trial=trial).first()
            if stored is None:
                raise CommandError(f"No kit list {check} in {trial.nct_id}.")
            if stored.sha256 != digest:
                raise CommandError(f"Kit list {check} has SHA-256 {stored.sha256}: it is NOT what this seed gives.")
            self.stderr.write(f"Kit list {check} matches.")
