"""Accounts: who may use the door, with which rights and budget, checked per request.

Passwords come from the environment (``serve.users.<name>.password_env``),
read once at start: a variable that is unset or empty stops the start, since
a user without a password would let anyone in as that user. Passwords are
compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from segwatch.collector.config.serve import ServeUser
from segwatch.collector.config.startup import unset_password

from .errors import ServeError

__all__ = ["Account", "Accounts"]


@dataclass(frozen=True)
class Account:
    """A user the door knows, its password and how many of its queries may run at once."""

    user: ServeUser
    password: str
    slots: threading.BoundedSemaphore

    @property
    def name(self) -> str:
        return self.user.name

    def budget(self) -> dict[str, str]:
        """The settings every query of this user runs under (set before its own)."""
        settings: dict[str, str] = {}
        if self.user.max_execution_time:
            settings["max_execution_time"] = str(self.user.max_execution_time)
        if self.user.max_memory_mib:
            settings["max_memory_usage"] = str(self.user.max_memory_mib << 20)
        return settings

    def check_setting(self, name: str, value: str) -> None:
        """Refuse ``name = value`` if it lifts this user's budget (0 lifts a limit too), as
        ClickHouse's settings constraints refuse it."""
        limit = self.budget().get(name.lower())
        if limit is None:
            return
        if not value.isdigit() or int(value) == 0 or int(value) > int(limit):
            raise ServeError(
                "SETTING_CONSTRAINT_VIOLATION",
                f"Setting {name} shouldn't be greater than {limit} for user {self.name} "
                f"(serve.users.{self.name}): asked {value}",
            )


class Accounts:
    """The door's users (``default`` with no password when the config names none)."""

    def __init__(self, users: tuple[ServeUser, ...], environ: Mapping[str, str] = os.environ):
        self._accounts: dict[str, Account] = {}
        for user in users:
            refusal = unset_password(user, environ)
            if refusal is not None:  # the rule validate applies (config.startup)
                raise ValueError(str(refusal))
            password = environ.get(user.password_env, "") if user.password_env else ""
            slots = threading.BoundedSemaphore(user.max_concurrent_queries)
            self._accounts[user.name] = Account(user, password, slots)

    def authenticate(self, name: str, password: str) -> Account:
        """The account ``name`` if ``password`` is its password; else ClickHouse's refusal."""
        account = self._accounts.get(name)
        expected = account.password if account is not None else "\0never"
        if account is None or not hmac.compare_digest(password.encode(), expected.encode()):
            raise ServeError(
                "AUTHENTICATION_FAILED",
                f"{name}: Authentication failed: password is incorrect, or there is no user "
                "with such name",
            )
        return account
