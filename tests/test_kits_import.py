import datetime

import pytest
import time_machine

from dosing import services, tasks
from dosing.exceptions import KitListInvalid
from dosing.models import Kit, KitStatus
from tests import dosing_factories as df

HEADER = "kit_number,kit_type,content,lot,expiry\n"


@pytest.fixture(autouse=True)
def _today():
    with time_machine.travel(datetime.datetime(2026, 11, 3, 2, tzinfo=datetime.UTC), tick=False):
        yield


def import_(text, trial, user):
    return services.kits_import(csv_text=text, imported_by=user, trial=trial)


def errors_of(text, trial, user) -> list[str]:
    with pytest.raises(KitListInvalid) as refused:
        import_(text, trial, user)
    assert not Kit.objects.exists()
    return refused.value.errors


def test_a_clean_list_lands_in_the_depot(trial, cast):
    kits = import_(
        HEADER + "K7Q2-1001,INF,active,L1,2028-01-31\nZ9X1-2002,TAB,placebo,L2,2027-06-30\n", trial, cast.supply_manager
    )
    assert len(kits) == 2
    assert set(Kit.objects.values_list("status", "site")) == {(KitStatus.IN_DEPOT, None)}


def test_a_wrong_header_is_refused(trial, cast):
    assert errors_of(
        "number,type,content,lot,expiry\nK7Q2-1001,INF,active,L1,2028-01-31\n", trial, cast.supply_manager
    )[0].startswith("Line 1")


def test_every_bad_line_is_named_and_nothing_is_imported(trial, cast):
    text = HEADER + "\n".join(
        [
            "K7Q2-1001,INF,active,L1,2028-01-31",  # 2: fine
            "K7Q2-1001,INF,active,L1,2028-01-31",  # 3: duplicate in file
            "K7Q2-1003,BOX,active,L1,2028-01-31",  # 4: unknown type
            "K7Q2-1004,INF,verum,L1,2028-01-31",  # 5: unknown content
            "K7Q2-1005,INF,active,L1,31/01/2028",  # 6: bad date
            "K7Q2-1006,INF,active,L1,2026-11-02",  # 7: expired
            "=HYPERLINK(1),INF,active,L1,2028-01-31",  # 8: formula
            "K7Q2-1008,TAB,placebo,@SUM(A1),2028-01-31",  # 9: formula in another cell
            "K7Q2-1009,TAB,placebo,L1",  # 10: missing column
            "K7Q2-1010,TAB,placebo,-1,2028-01-31",  # 11: formula (minus)
        ]
    )
    errors = errors_of(text, trial, cast.supply_manager)
    assert [error.split(":")[0] for error in errors] == [f"Line {n}" for n in range(3, 12)]
    assert "repeats line 2" in errors[0]
    assert "unknown kit type BOX" in errors[1]
    assert "active or placebo" in errors[2]
    assert "not a date" in errors[3]
    assert "expired" in errors[4]
    assert "formula" in errors[5] and "formula" in errors[6] and "formula" in errors[8]


def test_a_number_already_imported_is_refused(trial, cast):
    df.make_kit(number="K7Q2-1001", status=KitStatus.IN_DEPOT)
    with pytest.raises(KitListInvalid) as refused:
        import_(HEADER + "K7Q2-1001,INF,active,L1,2028-01-31\n", trial, cast.supply_manager)
    assert refused.value.errors == ["Line 2: kit number K7Q2-1001 already exists."]


def test_a_kit_expiring_today_is_accepted(trial, cast):
    assert len(import_(HEADER + "K7Q2-1001,INF,active,L1,2026-11-03\n", trial, cast.supply_manager)) == 1


def test_the_periodic_tasks_are_idempotent(site, cast):
    df.make_kit(site=site, expiry=datetime.date(2026, 11, 1))
    participant = df.randomized_participant(site, arm_code="PBO", by=cast.coordinator, day0=datetime.date(2026, 10, 1))
    assert tasks.expire_kits.apply().get() == 1
    assert tasks.expire_kits.apply().get() == 0
    assert tasks.mark_missed_visits.apply().get() == 2  # C1 and C2 windows closed by 3 November
    assert tasks.mark_missed_visits.apply().get() == 0
    assert participant.visits.filter(status="missed").count() == 2
