import shutil
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from randomization import services as randomization_services
from randomization.models import Slot
from tests import factories
from trialsite.models import ProtocolVersion, Site, Trial
from trialsite.protocol import load_protocol, load_protocol_file
from trialsite.protocol_schema import ProtocolError

BROKEN = Path(__file__).parent / "protocols" / "broken.toml"


def test_the_nct06442709_protocol_loads_with_four_arms_and_the_nantong_site(trial):
    assert trial.nct_id == "NCT06442709"
    assert trial.sponsor_protocol_id == "2023-K015"
    assert trial.target_enrollment == 100
    assert list(trial.arms.values_list("code", flat=True)) == ["TOC", "ASA", "COMBO", "PBO"]
    assert trial.arms.get(code="ASA").kit_contents == {"INF": "placebo", "TAB": "active"}
    site = trial.sites.get()
    assert (site.code, site.time_zone) == ("NT", "Asia/Shanghai")
    protocol = trial.protocol
    assert [criterion.code for criterion in protocol.eligibility.criteria] == ["IN1", "IN2", "EX1", "EX2", "EX3"]
    assert protocol.randomization.block_sizes == (4, 8)
    assert trial.current_version.version == protocol.trial.protocol_version


def test_the_typed_protocol_is_frozen(trial):
    with pytest.raises(Exception, match="frozen"):
        trial.protocol.dosing.infusion.mg_per_kg = 8


def test_loading_twice_changes_nothing(trial, settings):
    report = load_protocol_file(settings.PROTOCOL_FILE)
    assert report.changes == []
    assert Trial.objects.count() == 1
    assert trial.arms.count() == 4
    assert ProtocolVersion.objects.filter(trial=trial).count() == 1


def test_a_broken_protocol_file_is_refused_with_the_place_of_the_mistake(tmp_path, settings, db):
    broken = settings.PROTOCOL_FILE.read_text().replace("block_sizes = [4, 8]", "block_sizes = [4, 6]")
    path = tmp_path / "broken.toml"
    path.write_text(broken)
    with pytest.raises(ProtocolError, match=r"randomization.block_sizes\[1\]: block size 6 is not a multiple"):
        load_protocol(path)
    assert not Trial.objects.exists()


def test_a_site_with_an_unknown_time_zone_is_refused(tmp_path, settings, db):
    path = tmp_path / "bad-zone.toml"
    path.write_text(settings.PROTOCOL_FILE.read_text().replace('"Asia/Shanghai"', '"Mars/Olympus"'))
    with pytest.raises(ProtocolError, match=r"sites\[0\].time_zone: unknown time zone Mars/Olympus"):
        load_protocol(path)


# Each mistake planted in tests/protocols/broken.toml, by the path the error must name.
EXPECTED_BROKEN = {
    "trial.nct_id": "must match",
    "trial.target_enrollment": "must be a positive integer",
    "trial.sponsor_contact_email": "must be an e-mail address",
    "sites[1].time_zone": "unknown time zone Moon/Tranquility",
    "arms[0].ratio": "must be a positive integer",
    "arms[1].kit_contents.TAB": "must be one of",
    "arms[1].colour": "is not a key this system knows",
    "eligibility.criteria[0].kind": "must be one of",
    "eligibility.maximum_age_years": "is required",
    "randomization.method": "must be one of",
    "randomization.factors[0].levels": "must have at least 2 entries",
    "dosing.infusion.vial_sizes_mg[2]": "must be a positive integer",
    "dosing.infusion.mg_per_kg": "must be a number above 0",
    "dosing.tablet.tablets_per_kit": "is required",
    "reminders.quiet_hours.start": "must be a time of day as HH:MM",
    "kits.types[1]": "must be a code",
}


def test_a_broken_third_protocol_names_every_mistake_by_its_path(db):
    with pytest.raises(ProtocolError) as refused:
        load_protocol(BROKEN)
    errors = refused.value.errors
    for path, message in EXPECTED_BROKEN.items():
        matching = [error for error in errors if error.startswith(f"{path}: ")]
        assert matching, f"no error names {path}: {errors}"
        assert message in matching[0], matching[0]
    # Nothing else: every error is one we planted, each named by a path.
    assert len(errors) == len(EXPECTED_BROKEN), errors
    assert not Trial.objects.exists()


def test_check_validates_a_file_without_loading_it(db, settings, capsys):
    call_command("load_protocol", str(settings.PROTOCOL_FILE), "--check")
    out = capsys.readouterr().out
    assert "valid. NCT06442709 version" in out
    assert not Trial.objects.exists()
    with pytest.raises(CommandError) as refused:
        call_command("load_protocol", str(BROKEN), "--check")
    assert f"{len(EXPECTED_BROKEN)} problem(s)" in str(refused.value)
    assert "dosing.infusion.vial_sizes_mg[2]: must be a positive integer" in str(refused.value)


def test_the_load_protocol_command_reports_what_it_loaded(db, capsys):
    call_command("load_protocol")
    out = capsys.readouterr().out
    assert "Loaded NCT06442709: 4 arms, 1 site(s), target 100 participants" in out
    assert "protocol version" in out


def _amended(settings, tmp_path, *replacements) -> Path:
    text = settings.PROTOCOL_FILE.read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "amended.toml"
    path.write_text(text)
    return path


def test_check_says_when_the_rules_across_the_file_are_still_to_be_checked(db, settings, tmp_path):
    """A file whose keys are wrong is not yet checked against its own other parts: the check says
    so, rather than let the author fix the list and meet a second one. A file whose keys are all
    right gets every cross-part mistake at once, without that note."""
    note = "are checked once these are fixed"
    with pytest.raises(CommandError) as refused:
        call_command("load_protocol", str(BROKEN), "--check")
    assert note in str(refused.value)
    # Keys right, two parts at odds: a block size against the ratio, a form's visit against the schedule.
    path = _amended(
        settings,
        tmp_path,
        ("block_sizes = [4, 8]", "block_sizes = [4, 6]"),
        ('visits = ["C1", "C2",', 'visits = ["C13", "C1", "C2",'),
    )
    with pytest.raises(CommandError) as refused:
        call_command("load_protocol", str(path), "--check")
    message = str(refused.value)
    assert "2 problem(s)" in message
    assert "randomization.block_sizes[1]: block size 6 is not a multiple of the allocation ratio total 4" in message
    assert "forms[0].visits[0]: C13 is not a visit of the schedule" in message
    assert note not in message
    assert not Trial.objects.exists()


def test_an_amendment_is_a_new_version_and_the_old_one_is_kept(trial, settings, tmp_path):
    first = trial.current_version
    path = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("target_enrollment = 100", "target_enrollment = 120"),
    )
    report = load_protocol_file(path)
    trial.refresh_from_db()
    assert report.new_version
    assert trial.target_enrollment == 120
    assert trial.current_version.version == "2.0"
    assert list(trial.protocol_versions.values_list("version", flat=True)) == ["1.0", "2.0"]
    assert ProtocolVersion.objects.get(pk=first.pk).definition["trial"]["target_enrollment"] == 100


def test_a_used_arm_cannot_be_changed_and_the_refusal_says_what(trial, site, cast, settings, tmp_path):
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="protocol", slots_per_stratum=8, created_by=cast.statistician
    )
    randomization_services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    # Every arm used: four participants fill the first block of four or half a block of eight.
    for _ in range(8):
        participant = factories.make_participant(site, by=cast.coordinator)
        randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    path = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("ratio = 1", "ratio = 2"),
        ("block_sizes = [4, 8]", "block_sizes = [5, 10]"),
    )
    with pytest.raises(ProtocolError) as refused:
        load_protocol(path)
    assert any("arms[0].ratio: arm TOC has randomized participants" in error for error in refused.value.errors)
    trial.refresh_from_db()
    assert trial.current_version.version == "1.0"
    assert trial.arms.get(code="TOC").ratio == 1


def _blocks_list(trial, cast, *, lock: bool):
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="protocol", slots_per_stratum=8, created_by=cast.statistician
    )
    if lock:
        randomization_services.list_lock(
            randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
        )
    return randomization_list


def _ratio_doubled(settings, tmp_path, arm_code: str) -> Path:
    """Version 2.0 with one arm's ratio 2 (blocks of 5 and 10 then), naming the cast's second site."""
    text = settings.PROTOCOL_FILE.read_text()
    at = text.index("ratio = 1", text.index(f'code = "{arm_code}"'))
    text = text[:at] + "ratio = 2" + text[at + len("ratio = 1") :]
    for old, new in (
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("block_sizes = [4, 8]", "block_sizes = [5, 10]"),
        ("[[sites]]\n", '[[sites]]\ncode = "SH"\nname = "Hospital SH"\ntime_zone = "Asia/Shanghai"\n\n[[sites]]\n'),
    ):
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / "ratio.toml"
    path.write_text(text)
    return path


def test_a_locked_list_keeps_the_ratios_it_was_drawn_with_before_anyone_is_randomized(
    trial, site, cast, settings, tmp_path
):
    """Otherwise the list would go on allocating 1:1:1:1 under a protocol saying 2:1:1:1, and the
    auditor, re-deriving it from the protocol's ratios, would report its slots changed."""
    _blocks_list(trial, cast, lock=True)
    with pytest.raises(ProtocolError) as refused:
        load_protocol(_ratio_doubled(settings, tmp_path, "TOC"))
    assert refused.value.errors == [
        "arms[0].ratio: locked randomization list v1 was drawn with arm TOC at ratio 1; it stays 1"
    ]
    trial.refresh_from_db()
    assert trial.current_version.version == "1.0"
    assert trial.arms.get(code="TOC").ratio == 1


def test_an_arm_nobody_was_given_yet_keeps_its_ratio_once_the_list_is_locked(trial, site, cast, settings, tmp_path):
    _blocks_list(trial, cast, lock=True)
    participant = factories.make_participant(site, by=cast.coordinator)
    randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)
    given = Slot.objects.get(participant=participant).arm.code
    other = trial.arms.exclude(code=given).order_by("order").first()
    with pytest.raises(ProtocolError) as refused:
        load_protocol(_ratio_doubled(settings, tmp_path, other.code))
    assert refused.value.errors == [
        f"arms[{other.order}].ratio: locked randomization list v1 was drawn with arm {other.code} at ratio 1; it stays 1"
    ]


def test_a_list_not_yet_locked_does_not_hold_the_ratios(trial, site, cast, settings, tmp_path):
    """A draft list is made again after the amendment; only locking makes it the trial's."""
    draft = _blocks_list(trial, cast, lock=False)
    load_protocol(_ratio_doubled(settings, tmp_path, "TOC"))
    trial.refresh_from_db()
    assert trial.arms.get(code="TOC").ratio == 2
    # The draft made before the amendment cannot be locked: its blocks hold the old ratio.
    with pytest.raises(randomization_services.ListOutdated, match=r"other arms or ratios.*stratum NT, block 1"):
        randomization_services.list_lock(
            randomization_list=draft, locked_by=cast.statistician, password=factories.PASSWORD
        )
    draft.refresh_from_db()
    assert draft.locked_at is None and not draft.is_active
    # One generated after it can.
    after = randomization_services.list_generate(
        trial=trial, seed="amended", slots_per_stratum=10, created_by=cast.statistician, reason="ratio amended"
    )
    randomization_services.list_lock(randomization_list=after, locked_by=cast.statistician, password=factories.PASSWORD)


def test_a_screened_version_cannot_be_rewritten_in_place(trial, site, cast, settings, tmp_path):
    factories.make_participant(site, by=cast.coordinator)
    path = _amended(settings, tmp_path, ("target_enrollment = 100", "target_enrollment = 90"))
    with pytest.raises(ProtocolError, match=r"trial.protocol_version: version 1.0 is already loaded with other"):
        load_protocol(path)


def test_a_second_trial_with_the_same_site_code_gets_its_own_site(trial, site, cast, settings, tmp_path):
    """Loading another protocol that names site NT never moves NT's participants to it."""
    participant = factories.make_participant(site, by=cast.coordinator)
    path = _amended(settings, tmp_path, ('nct_id = "NCT06442709"', 'nct_id = "NCT09999999"'))
    other = load_protocol(path)
    assert other.pk != trial.pk
    assert Site.objects.filter(code="NT").count() == 2
    participant.refresh_from_db()
    assert participant.site.trial_id == trial.pk
    assert site.staff_roles.exists()
    assert not other.sites.get().staff_roles.exists()


def test_a_site_with_screenings_cannot_be_removed(trial, site, cast, settings, tmp_path):
    factories.make_participant(site, by=cast.coordinator)
    text = settings.PROTOCOL_FILE.read_text()
    text = text.replace('code = "NT"', 'code = "SH"', 1)
    path = tmp_path / "moved.toml"
    path.write_text(text)
    with pytest.raises(ProtocolError, match=r"sites: site NT has 1 screening\(s\) and cannot be removed"):
        load_protocol(path)
    assert trial.sites.filter(code="NT").exists()


def test_roles_in_the_file_are_checked_against_known_capabilities(db, settings, tmp_path):
    path = tmp_path / "roles.toml"
    shutil.copy(settings.PROTOCOL_FILE, path)
    with open(path, "a") as protocol_file:
        protocol_file.write('\n[roles.investigator]\ncapabilities = ["view_participants", "see_everything"]\n')
    with pytest.raises(
        ProtocolError, match=r"roles.investigator.capabilities\[1\]: see_everything is not a capability"
    ):
        load_protocol(path)


def test_records_say_which_protocol_version_they_were_captured_under(trial, site, cast):
    participant = factories.make_participant(site, by=cast.coordinator)
    assert participant.screening.protocol_version == trial.current_version


def _randomize_one(trial, site, cast):
    randomization_list = randomization_services.list_generate(
        trial=trial, seed="protocol", slots_per_stratum=8, created_by=cast.statistician
    )
    randomization_services.list_lock(
        randomization_list=randomization_list, locked_by=cast.statistician, password=factories.PASSWORD
    )
    participant = factories.make_participant(site, by=cast.coordinator)
    randomization_services.participant_randomize(participant=participant, randomized_by=cast.coordinator)


def test_the_rules_in_force_never_go_back_to_an_earlier_version(trial, settings, tmp_path):
    amended = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("effective_date = 2021-08-01", "effective_date = 2026-06-01"),
    )
    load_protocol(amended)
    with pytest.raises(ProtocolError, match=r"trial.protocol_version: version 1.0 was replaced by version 2.0"):
        load_protocol(settings.PROTOCOL_FILE)
    trial.refresh_from_db()
    assert trial.current_version.version == "2.0"


def test_an_amendment_without_an_effective_date_is_refused_once_one_was_given(trial, settings, tmp_path):
    path = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "2.0"'),
        ("effective_date = 2021-08-01  # the registry's study start date\n", ""),
    )
    with pytest.raises(ProtocolError, match=r"trial.effective_date: is required"):
        load_protocol(path)


def test_a_running_blinded_trial_cannot_be_opened_by_a_reload(trial, site, cast, settings, tmp_path):
    _randomize_one(trial, site, cast)
    path = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "1.1"'),
        ('masking = "single"', 'masking = "none"'),
    )
    with pytest.raises(ProtocolError, match=r"trial.masking: participants are randomized under masking 'single'"):
        load_protocol(path)
    trial.refresh_from_db()
    assert trial.protocol.blinded


def test_stratification_cannot_change_once_participants_are_randomized(trial, site, cast, settings, tmp_path):
    _randomize_one(trial, site, cast)
    path = _amended(
        settings,
        tmp_path,
        ('protocol_version = "1.0"', 'protocol_version = "1.1"'),
        (
            "factors = []",
            'factors = [{ code = "liver", label = "Liver metastasis", levels = ["yes", "no"] }]',
        ),
    )
    with pytest.raises(ProtocolError, match=r"randomization: participants are randomized by method"):
        load_protocol(path)
