from django.core.management.base import BaseCommand, CommandError

from randomization import generator
from trialsite.models import Trial


class Command(BaseCommand):
    help = (
        "Print the randomization list a seed gives, as CSV (stratum,sequence,block,block_size,arm), "
        "with the same generator the application uses: an auditor re-derives a list with it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", required=True)
        parser.add_argument("--size", type=int, required=True, help="slots per stratum")
        parser.add_argument("--strata", help="comma-separated strata; default: the protocol's")
        parser.add_argument("--trial", help="NCT id; default: the only trial loaded")

    def handle(self, *args, seed, size, strata=None, trial=None, **options):
        trials = Trial.objects.all() if trial is None else Trial.objects.filter(nct_id=trial)
        if trials.count() != 1:
            raise CommandError("Name the trial with --trial (or load exactly one protocol).")
        trial = trials.get()
        if trial.protocol.randomization.method != "stratified_permuted_blocks":
            raise CommandError(
                "This trial randomizes by minimization: there is no list to print in advance. "
                "`manage.py randomization_audit` re-derives every allocation from the seed."
            )
        if size <= 0:
            raise CommandError("--size must be a positive number of slots per stratum")
        chosen = [stratum.strip() for stratum in strata.split(",")] if strata else generator.protocol_strata(trial)
        arms = [(arm.code, arm.ratio) for arm in trial.arms.order_by("order")]
        slots = generator.generate(
            seed=seed, strata=chosen, size=size, arms=arms, block_sizes=list(trial.protocol.randomization.block_sizes)
        )
        self.stdout.write(generator.as_csv(slots), ending="")
