"""The Django admin against a motivated insider (issue 13, attack 3): its filters were an
oracle, so the admin does not exist for anyone who holds a blinded role, and no filter reaches a
JSON value or an allocation column even for those who may use it."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import models
from django.test import Client
from django.urls import reverse

from tests import factories
from trialsite.access import DEFAULT_ROLE_CAPABILITIES, Capability
from trialsite.admin import TrialDataAdmin
from trialsite.audit import audit_context
from trialsite.models import Role, Trial

SLOT_ORACLE = "/admin/trialsite/auditevent/?table_name=randomization_slot&new_values__arm_id__iexact={arm}"
KIT_ORACLE = "/admin/trialsite/auditevent/?table_name=dosing_kit&new_values__content=active"
BLINDED_ROLES = [Role.COORDINATOR, Role.PHARMACIST, Role.INVESTIGATOR, Role.MONITOR]


def staff(user):
    get_user_model().objects.filter(pk=user.pk).update(is_staff=True)
    user.refresh_from_db()
    client = Client()
    client.force_login(user)
    return client


def admin_urls() -> list[str]:
    urls = ["/admin/", "/admin/login/", "/admin/password_change/", "/admin/trialsite/", "/admin/no/such/page/"]
    for model in admin.site._registry:
        opts = model._meta
        urls.append(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
    return urls


@pytest.fixture
def unblinded_data_manager(trial, cast):
    """The statistician, made staff, in a trial whose protocol also lets the statistician read
    the audit trail: someone the admin lets in and who may open the audit list there."""
    definition = dict(trial.definition)
    capabilities = sorted(DEFAULT_ROLE_CAPABILITIES[Role.STATISTICIAN] | {Capability.READ_AUDIT})
    definition["roles"] = dict(definition.get("roles") or {}, statistician={"capabilities": capabilities})
    with audit_context(reason="test: unblinded data manager"):
        Trial.objects.filter(pk=trial.pk).update(definition=definition)
    return cast.statistician


def test_a_blinded_staff_monitor_cannot_filter_slots_by_arm_in_the_admin(trial, cast):
    client = staff(cast.monitor)
    for arm in trial.arms.all():
        answer = client.get(SLOT_ORACLE.format(arm=arm.pk))
        assert answer.status_code == 404
    assert client.get(KIT_ORACLE).status_code == 404


def test_the_admin_refuses_a_json_filter_even_for_a_user_it_lets_in(trial, unblinded_data_manager):
    client = staff(unblinded_data_manager)
    assert client.get("/admin/trialsite/auditevent/?table_name=randomization_slot").status_code == 200
    assert (
        client.get("/admin/trialsite/auditevent/?table_name__exact=randomization_slot&action__exact=INSERT").status_code
        == 200
    )
    for url in (SLOT_ORACLE.format(arm=trial.arms.first().pk), KIT_ORACLE):
        answer = client.get(url)
        assert answer.status_code == 400, url
        assert b"randomization_slot #" not in answer.content
    for lookup in ("old_values__seed", "reason__icontains=x&table_name", "record_pk__regex=.", "actor__username"):
        assert client.get(f"/admin/trialsite/auditevent/?{lookup}=1").status_code == 400, lookup


@pytest.mark.parametrize("role", BLINDED_ROLES)
def test_every_admin_page_is_404_for_a_blinded_staff_user(cast, role):
    client = staff(cast[role])
    for url in admin_urls():
        answer = client.get(url)
        assert answer.status_code == 404, (url, answer.status_code)


def test_a_blinded_role_anywhere_closes_the_admin_even_with_an_unblinded_one(site, other_site, cast):
    both = factories.make_user(Role.STATISTICIAN, site, username="statistician-and-coordinator")
    with audit_context(reason="test cast"):
        both.trial_roles.create(site=other_site, role=Role.COORDINATOR)
    assert staff(both).get("/admin/").status_code == 404


def test_anonymous_and_non_staff_users_get_404_not_a_login_page(client, cast):
    assert client.get("/admin/").status_code == 404
    assert client.get("/admin/login/").status_code == 404
    not_staff = Client()
    not_staff.force_login(cast.statistician)
    assert not_staff.get("/admin/").status_code == 404


def test_staff_with_no_blinded_role_use_the_admin_read_only(cast, db):
    superuser = factories.make_user(None, None, username="admin", is_superuser=True)
    for user in (superuser, cast.supply_manager, cast.statistician):
        client = staff(user)
        assert client.get("/admin/").status_code == 200
        assert client.get("/admin/trialsite/site/").status_code == 200
    for model_admin in admin.site._registry.values():
        if isinstance(model_admin, TrialDataAdmin):
            assert not model_admin.has_add_permission(None)
            assert not model_admin.has_change_permission(None)
            assert not model_admin.has_delete_permission(None)


def test_no_admin_filter_or_search_reaches_a_json_or_blinded_column(rf, cast):
    request = rf.get("/admin/")
    request.user = cast.statistician
    for model, model_admin in admin.site._registry.items():
        if not isinstance(model_admin, TrialDataAdmin):
            continue
        for name in [*model_admin.get_list_filter(request), *model_admin.get_search_fields(request)]:
            field = model._meta.get_field(str(name).lstrip("^=@").split("__")[0])
            assert not isinstance(field, models.JSONField), (model, name)
            assert field.name not in model_admin.blinded_fields, (model, name)
