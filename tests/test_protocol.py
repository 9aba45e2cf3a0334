import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from trialsite.models import Trial
from trialsite.protocol import load_protocol


def test_the_nct06442709_protocol_loads_with_four_arms_and_the_nantong_site(trial):
    assert trial.nct_id == "NCT06442709"
    assert trial.sponsor_protocol_id == "2023-K015"
    assert trial.target_enrollment == 100
    assert list(trial.arms.values_list("code", flat=True)) == ["TOC", "ASA", "COMBO", "PBO"]
    assert trial.arms.get(code="ASA").kit_contents == {"INF": "placebo", "TAB": "active"}
    site = trial.sites.get()
    assert (site.code, site.time_zone) == ("NT", "Asia/Shanghai")
    assert [criterion["code"] for criterion in trial.eligibility["criteria"]] == ["IN1", "IN2", "EX1", "EX2", "EX3"]
    assert trial.randomization["block_sizes"] == [4, 8]


def test_loading_twice_changes_nothing(trial, settings):
    load_protocol(settings.PROTOCOL_FILE)
    assert Trial.objects.count() == 1
    assert trial.arms.count() == 4


def test_a_broken_protocol_file_is_refused_with_the_place_of_the_mistake(tmp_path, settings, db):
    broken = settings.PROTOCOL_FILE.read_text().replace("block_sizes = [4, 8]", "block_sizes = [4, 6]")
    path = tmp_path / "broken.toml"
    path.write_text(broken)
    with pytest.raises(ValidationError, match="block size 6 is not a multiple"):
        load_protocol(path)
    assert not Trial.objects.exists()


def test_a_site_with_an_unknown_time_zone_is_refused(tmp_path, settings, db):
    path = tmp_path / "bad-zone.toml"
    path.write_text(settings.PROTOCOL_FILE.read_text().replace('"Asia/Shanghai"', '"Mars/Olympus"'))
    with pytest.raises(ValidationError, match="unknown time zone Mars/Olympus"):
        load_protocol(path)


def test_the_load_protocol_command_reports_what_it_loaded(db, capsys):
    call_command("load_protocol")
    assert "Loaded NCT06442709: 4 arms, 1 site(s), target 100 participants" in capsys.readouterr().out
