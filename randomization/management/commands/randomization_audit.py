from django.core.management.base import BaseCommand, CommandError

from randomization import generator, methods
from randomization.models import RandomizationList, Slot
from trialsite.models import Trial


class Command(BaseCommand):
    help = (
        "Re-derive every allocation of a trial's randomization lists from their secret seed and "
        "report the first one that differs from the database (exit status 1). A minimization list "
        "is replayed allocation by allocation from the seed and the recorded factor levels, in "
        "order (randomization/methods.py); a generated permuted-blocks list is regenerated; an "
        "imported list is checked against its SHA-256."
    )

    def add_arguments(self, parser):
        parser.add_argument("--trial", help="NCT id; default: the only trial loaded")
        parser.add_argument("--list-version", type=int, help="one list version; default: every locked list")
        parser.add_argument("--seed", help="the seed as the auditor holds it; default: the one stored with the list")

    def handle(self, *args, trial=None, list_version=None, seed=None, **options):
        trials = Trial.objects.all() if trial is None else Trial.objects.filter(nct_id=trial)
        if trials.count() != 1:
            raise CommandError("Name the trial with --trial (or load exactly one protocol).")
        trial = trials.get()
        lists = RandomizationList.objects.filter(trial=trial).order_by("version")
        lists = lists.filter(version=list_version) if list_version else lists.filter(locked_at__isnull=False)
        if not lists:
            raise CommandError("No such randomization list.")
        problems = []
        for randomization_list in lists:
            problem = self.audit(trial, randomization_list, seed or randomization_list.seed)
            if problem:
                problems.append(f"list v{randomization_list.version}: {problem}")
        if problems:
            raise CommandError("\n".join(problems))

    def audit(self, trial, randomization_list, seed) -> str | None:
        slots = Slot.objects.filter(randomization_list=randomization_list).select_related("arm", "participant")
        where = f"list v{randomization_list.version} ({randomization_list.get_method_display()})"
        if randomization_list.method == RandomizationList.Method.MINIMIZATION:
            if methods.Minimization(trial).rules_digest([]) != randomization_list.sha256:
                return "the protocol's minimization rules are not those the list was made with (SHA-256 differs)"
            return self.audit_minimization(trial, list(slots.order_by("sequence")), seed, where)
        planned = [
            generator.PlannedSlot(slot.stratum, slot.sequence, slot.block, slot.block_size, slot.arm.code)
            for slot in slots.order_by("stratum", "sequence")
        ]
        if randomization_list.source == RandomizationList.Source.IMPORTED:
            if generator.digest(planned) != randomization_list.sha256:
                return "the slots no longer match the SHA-256 recorded when the list was imported"
            self.stdout.write(f"{where}: {len(planned)} imported slots match the recorded SHA-256.")
            return None
        strata = sorted({slot.stratum for slot in planned})
        derived = generator.generate(
            seed=seed,
            strata=strata,
            size=randomization_list.slots_per_stratum,
            arms=[(arm.code, arm.ratio) for arm in trial.protocol.arms],
            block_sizes=randomization_list.block_sizes,
        )
        derived_arms = {(slot.stratum, slot.sequence): slot.arm for slot in derived}
        for slot in planned:
            expected = derived_arms.get((slot.stratum, slot.sequence))
            if slot.arm != expected:
                return (
                    f"slot {slot.sequence} of stratum {slot.stratum} is recorded as {slot.arm}; "
                    f"the seed gives {expected or 'no such slot'}"
                )
        if len(planned) != len(derived):
            return f"the list has {len(planned)} slots; the seed gives {len(derived)}"
        self.stdout.write(f"{where}: {len(planned)} slots re-derived from the seed; all match.")
        return None

    def audit_minimization(self, trial, slots, seed, where) -> str | None:
        sequences = [slot.sequence for slot in slots]
        if sequences != list(range(1, len(slots) + 1)):
            missing = next(number for number in range(1, len(slots) + 2) if number not in set(sequences))
            return f"allocation {missing} is missing from the history"
        history = [slot.stratum for slot in slots]
        for (sequence, decision), slot in zip(
            methods.replay(seed=seed, protocol=trial.protocol, history=history), slots, strict=True
        ):
            if slot.arm.code != decision.arm:
                who = slot.participant.randomization_number if slot.participant else "no participant"
                return (
                    f"allocation {sequence} ({who}, {slot.stratum}) is recorded as {slot.arm.code}; "
                    f"the seed and the earlier allocations give {decision.arm}"
                )
        for slot in slots:
            if slot.participant and generator.stratum_of(slot.participant) != slot.stratum:
                # Not a mismatch of the allocation: it used the levels recorded then.
                self.stdout.write(
                    f"{where}: note: allocation {slot.sequence} ({slot.participant.randomization_number}) was made "
                    f"with {slot.stratum}; the participant's screening now gives {generator.stratum_of(slot.participant)}."
                )
        self.stdout.write(f"{where}: {len(slots)} allocations re-derived from the seed and the history; all match.")
        return None
