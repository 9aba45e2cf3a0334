from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from trialsite.audit import audit_context
from trialsite.models import Role, Site, StaffRole

# Development logins only: the command refuses to run with DEBUG off.
DEMO_PASSWORD = "demo-password-2026"
DEMO_USERS = [
    ("coordinator", Role.COORDINATOR, "Li Na"),
    ("pharmacist", Role.PHARMACIST, "Wang Fang"),
    ("investigator", Role.INVESTIGATOR, "Bo You"),
    ("monitor", Role.MONITOR, "Zhang Wei"),
    ("statistician", Role.STATISTICIAN, "Chen Jing"),
    ("supply", Role.SUPPLY_MANAGER, "Liu Yang"),
]


class Command(BaseCommand):
    help = "Create one demo user per role at the first site (development only)."

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("Demo users are for development; DEBUG is off.")
        site = Site.objects.order_by("id").first()
        if site is None:
            raise CommandError("Load a protocol first: manage.py load_protocol")
        User = get_user_model()
        with audit_context(reason="Demo users for development"), transaction.atomic():
            for username, role, full_name in DEMO_USERS:
                first_name, last_name = full_name.split(" ", 1)
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={"first_name": first_name, "last_name": last_name, "email": f"{username}@localhost"},
                )
                if created:
                    user.set_password(DEMO_PASSWORD)
                    user.save()
                StaffRole.objects.get_or_create(user=user, site=site, role=role)
        for username, role, _ in DEMO_USERS:
            self.stdout.write(f"  {username:<13} {DEMO_PASSWORD}   {Role(role).label} at {site.code}")
