"""Password re-entry for actions that must be attributable beyond a session: e-signatures
and emergency unblinding. The password is checked again at the moment of the act."""

from django.contrib.auth import authenticate

from trialsite.exceptions import PasswordIncorrect


def confirm_password(*, user, password: str, request=None) -> None:
    """Raise PasswordIncorrect unless `password` is `user`'s current password.

    With the HTTP request at hand it goes through the authentication backends, so a locked-out
    account (django-axes) cannot sign and failed re-entries count towards the lockout like
    failed logins. Without one (a management command, a service called directly) it checks the
    password hash."""
    if not password or not user.is_active:
        raise PasswordIncorrect()
    if request is None:
        if not user.check_password(password):
            raise PasswordIncorrect()
        return
    if authenticate(request, username=user.get_username(), password=password) is None:
        raise PasswordIncorrect()
