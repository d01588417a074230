"""How failed logins lock (django-axes' ``AXES_HANDLER``), for the admin and ``auth/token`` alike.

Three groups of failures are counted, each against its own limit within ``LOGIN_LOCKOUT_MINUTES``:

- one username from one address (``LOGIN_FAILURE_LIMIT``, 10): a guesser is stopped, while the
  account's owner elsewhere still logs in, so nobody can lock a named account out of every address;
- one address, whatever the usernames (``LOGIN_ADDRESS_FAILURE_LIMIT``, 30): one address cannot try
  many accounts;
- one username from every address (``LOGIN_ACCOUNT_FAILURE_LIMIT``, 100; 0 turns it off): a slow
  guess spread over many addresses. This one locks the account for everyone, so it is set well above
  what one address may send (docs/operations.md, "Logins, throttles and the client address").

django-axes compares every group with one limit (``AXES_FAILURE_LIMIT``, the first): this handler
scales each group's count so that it reaches that limit exactly when the group reaches its own.
A successful login forgets only that username's failures from that address, so logging into one's own
account cannot wipe an address's failures against other accounts.
"""

from __future__ import annotations

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_failure_limit, get_lockout_parameters
from axes.models import AccessAttempt
from django.conf import settings
from django.db.models import QuerySet, Sum


def group_limit(parameter: str | list[str], pair_limit: int) -> int:
    """The failure limit of one lockout group of ``AXES_LOCKOUT_PARAMETERS`` (0: not counted)."""
    if parameter == "ip_address" or parameter == ["ip_address"]:
        return settings.LOGIN_ADDRESS_FAILURE_LIMIT
    if parameter == "username" or parameter == ["username"]:
        return settings.LOGIN_ACCOUNT_FAILURE_LIMIT
    return pair_limit


class LoginAttemptsHandler(AxesDatabaseHandler):
    """django-axes' database handler with a limit per group (see the module docstring)."""

    def _groups(self, request, credentials) -> list[tuple[int, int, QuerySet]]:
        """``(count, limit, attempts)`` for each lockout group, in ``AXES_LOCKOUT_PARAMETERS`` order."""
        pair_limit = get_failure_limit(request, credentials)
        parameters = get_lockout_parameters(request, credentials)
        out = []
        for parameter, attempts in zip(parameters, self.get_user_attempts(request, credentials), strict=True):
            count = attempts.aggregate(n=Sum("failures_since_start"))["n"] or 0
            out.append((count, group_limit(parameter, pair_limit), attempts))
        return out

    def get_failures(self, request, credentials: dict | None = None) -> int:
        """The worst group's failures, scaled to ``AXES_FAILURE_LIMIT``: at or above it exactly when
        some group has reached its own limit (``count * pair_limit // limit >= pair_limit`` iff
        ``count >= limit``)."""
        pair_limit = get_failure_limit(request, credentials)
        groups = self._groups(request, credentials)
        return max((count * pair_limit // limit for count, limit, _ in groups if limit > 0), default=0)

    def attempts_over_limit(self, request, credentials: dict | None = None) -> list[QuerySet]:
        """The recent failures of each group that has reached its limit (what keeps a login locked)."""
        groups = self._groups(request, credentials)
        return [attempts for count, limit, attempts in groups if 0 < limit <= count]

    def reset_user_attempts(self, request, credentials: dict | None = None) -> int:
        """After a successful login (``AXES_RESET_ON_SUCCESS``): forget this username's failures from
        this address only. django-axes would delete every group's rows, the whole address's included,
        which would let anyone with an account reset their address's count by logging in."""
        username = get_client_username(request, credentials)
        attempts = AccessAttempt.objects.filter(username=username, ip_address=request.axes_ip_address)
        return attempts.delete()[0]
