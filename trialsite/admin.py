"""The admin is a read-only window on trial data, scoped and blinded by the same access
functions as every other surface, and open only to people with no blinded role
(trialsite/admin_site.py). Writes go through the services, which audit them."""

from django.contrib import admin
from django.contrib.admin import SimpleListFilter
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from trialsite import access
from trialsite.access import Capability
from trialsite.models import Arm, AuditEvent, Signature, Site, StaffRole, Trial

# What the admin's own list filters put in the query string after a field's name (choices,
# booleans, dates, foreign keys); no transform, no text or JSON lookup.
FILTER_LOOKUPS = frozenset({"", "exact", "isnull", "in", "gte", "lt", "gt", "lte", "id__exact", "pk__exact"})


class TrialDataAdmin(admin.ModelAdmin):
    # Path from the model to its site, for scoping; None for trial-wide tables.
    site_field: str | None = "site"
    # Fields shown only to users who may view allocation at the row's site.
    blinded_fields: tuple[str, ...] = ()
    # A trial-wide table that is itself allocation (the arms): visible only when unblinded.
    allocation_table = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        if self.allocation_table:
            return access.can(request.user, Capability.VIEW_ALLOCATION)
        return request.user.is_active and request.user.is_staff

    def has_module_permission(self, request):
        return self.has_view_permission(request)

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if self.site_field is None:
            return queryset
        return queryset.filter(**{f"{self.site_field}__in": access.site_ids(request.user)}).distinct()

    def get_exclude(self, request, obj=None):
        excluded = list(super().get_exclude(request, obj) or [])
        site = getattr(obj, "site_id", None) if obj is not None else None
        if self.blinded_fields and not access.can(request.user, Capability.VIEW_ALLOCATION, site):
            excluded += list(self.blinded_fields)
        return excluded

    def get_list_display(self, request):
        display = list(super().get_list_display(request))
        if not access.can(request.user, Capability.VIEW_ALLOCATION):
            display = [name for name in display if name not in self.blinded_fields]
        return display

    def get_list_filter(self, request):
        # Not even for unblinded users: a filter on an allocation column is a list of arms.
        return [
            list_filter
            for list_filter in super().get_list_filter(request)
            if not (isinstance(list_filter, str) and self._is_json_or_blinded(list_filter))
        ]

    def lookup_allowed(self, lookup, value, request=None):
        """Only the lookups the declared list filters make. Django's own rule lets any lookup
        on a local field through, and a lookup into a JSON column of the audit trail
        (`new_values__arm_id__iexact`) filtered rows by a value the page never shows: an
        oracle. Anything else is refused with Django's 400 (DisallowedModelAdminLookup)."""
        for list_filter in self.get_list_filter(request):
            if isinstance(list_filter, type) and issubclass(list_filter, SimpleListFilter):
                if lookup == list_filter.parameter_name:
                    return True
                continue
            name = list_filter[0] if isinstance(list_filter, (tuple, list)) else list_filter
            if not isinstance(name, str) or self._is_json_or_blinded(name):
                continue
            if lookup == name or (lookup.startswith(name + "__") and lookup[len(name) + 2 :] in FILTER_LOOKUPS):
                return True
        return False

    def get_search_fields(self, request):
        # A search is a filter too: never into a JSON column or a blinded field.
        return [name for name in super().get_search_fields(request) if not self._is_json_or_blinded(name)]

    def _is_json_or_blinded(self, path: str) -> bool:
        name = path.lstrip("^=@").split("__")[0]
        if name in self.blinded_fields:
            return True
        try:
            field = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            return True
        return isinstance(field, models.JSONField)


@admin.register(Trial)
class TrialAdmin(TrialDataAdmin):
    site_field = "sites"
    list_display = ["nct_id", "title", "target_enrollment", "loaded_at"]
    exclude = ["definition"]


@admin.register(Arm)
class ArmAdmin(TrialDataAdmin):
    # Only the arms of trials where the user holds a role.
    site_field = "trial__sites"
    allocation_table = True
    list_display = ["code", "name", "ratio", "trial"]


@admin.register(Site)
class SiteAdmin(TrialDataAdmin):
    site_field = "pk"
    list_display = ["code", "name", "time_zone", "trial"]


@admin.register(StaffRole)
class StaffRoleAdmin(TrialDataAdmin):
    list_display = ["user", "site", "role"]


@admin.register(Signature)
class SignatureAdmin(TrialDataAdmin):
    list_display = ["signer", "meaning", "signed_at", "record_table", "record_pk"]


@admin.register(AuditEvent)
class AuditEventAdmin(TrialDataAdmin):
    site_field = "site_id"
    list_display = ["occurred_at", "action", "table_name", "record_pk", "actor", "reason"]
    list_filter = ["action", "table_name"]
    exclude = ["old_values", "new_values"]

    def has_view_permission(self, request, obj=None):
        return access.can(request.user, Capability.READ_AUDIT)
