"""What a monitor may record: allow- and deny-lists, keyed hashes of identifiers, no free text.

Applied to every feature (and the text rule to every output) before it is put
on a span, for single calls and batches alike. Free text is any string longer
than ``max_string_length``: it is never recorded unless ``record_text`` is set,
and then only its first ``max_string_length`` characters.

A hashed feature is recorded as the first 16 hex digits (64 bits) of
HMAC-SHA256(key, ``str(value)`` as UTF-8). The key is required and secret: a
plain hash of a user id or an e-mail address is reversed by hashing every
candidate (a dictionary), a keyed one only by whoever holds the key. The same
key gives the same hash in every process, so hashed values still segment and
join; a new key gives new hashes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["HASH_DIGITS", "SEGWATCH_HASH_KEY", "RecordingPolicy"]

SEGWATCH_HASH_KEY: Final = "SEGWATCH_HASH_KEY"
"""Environment variable: the HMAC key for ``hash_features`` when ``hash_key=`` is not given.

Read once, when a monitor is made (configuration time), never during a call.
"""

HASH_DIGITS: Final = 16
"""Hex digits of the HMAC-SHA256 kept for a hashed feature (64 bits)."""


def _key_bytes(hash_key: str | bytes | None) -> bytes | None:
    """The key as bytes: ``hash_key`` (str as UTF-8), else ``$SEGWATCH_HASH_KEY``, else None."""
    if hash_key is None:
        hash_key = os.environ.get(SEGWATCH_HASH_KEY) or None
    if hash_key is None:
        return None
    if isinstance(hash_key, str):
        hash_key = hash_key.encode("utf-8")
    if not isinstance(hash_key, bytes):
        raise ValueError("hash_key must be a str or bytes")
    if not hash_key:
        raise ValueError("hash_key must not be empty")
    return hash_key


@dataclass(frozen=True)
class RecordingPolicy:
    """Which features are recorded and how; the defaults record every feature, no free text."""

    allow: frozenset[str] | None = None
    deny: frozenset[str] = field(default_factory=frozenset)
    hashed: frozenset[str] = field(default_factory=frozenset)
    hash_key: bytes | None = field(default=None, repr=False)  # a secret: kept out of reprs
    max_string_length: int = 128
    record_text: bool = False

    def __post_init__(self) -> None:
        if self.hashed and not self.hash_key:
            raise ValueError(
                f"hash_features {sorted(self.hashed)} need a secret key: pass hash_key= "
                f"or set {SEGWATCH_HASH_KEY} (values are recorded as HMAC-SHA256 with it; "
                "an unkeyed hash of an id is reversed by hashing every candidate)"
            )

    @classmethod
    def build(
        cls,
        allow: Collection[str] | None = None,
        deny: Collection[str] = (),
        hashed: Collection[str] = (),
        hash_key: str | bytes | None = None,
        max_string_length: int = 128,
        record_text: bool = False,
    ) -> RecordingPolicy:
        """A validated policy; ``ValueError`` names the argument at fault.

        The hash key is ``hash_key``, else ``$SEGWATCH_HASH_KEY`` (read now),
        and is required when ``hashed`` names any feature.
        """
        if max_string_length < 1:
            raise ValueError("max_string_length must be at least 1")
        for name, value in (("features_allow", allow), ("features_deny", deny),
                            ("hash_features", hashed)):  # fmt: skip
            if isinstance(value, str):
                raise ValueError(f"{name} must be a collection of names, not one string")
        return cls(
            allow=frozenset(allow) if allow is not None else None,
            deny=frozenset(deny),
            hashed=frozenset(hashed),
            hash_key=_key_bytes(hash_key) if hashed else None,
            max_string_length=max_string_length,
            record_text=record_text,
        )

    def keeps(self, name: str) -> bool:
        return name not in self.deny and (self.allow is None or name in self.allow)

    def hash(self, value: Any) -> str | None:
        """HMAC-SHA256 of ``str(value)`` under the key, :data:`HASH_DIGITS` hex digits."""
        if value is None:
            return None
        assert self.hash_key is not None  # __post_init__: no hashed feature without a key
        digest = hmac.digest(self.hash_key, str(value).encode("utf-8"), "sha256")
        return digest.hex()[:HASH_DIGITS]

    def text(self, value: Any) -> Any:
        """A string value as it may be recorded: None (MISSING) for unrequested free text."""
        if isinstance(value, str) and len(value) > self.max_string_length:
            return value[: self.max_string_length] if self.record_text else None
        return value

    def features(self, values: dict[str, Any]) -> dict[str, Any]:
        """One row of features, filtered, hashed and with free text removed."""
        out: dict[str, Any] = {}
        for name, value in values.items():
            if not self.keeps(name):
                continue
            out[name] = self.hash(value) if name in self.hashed else self.text(value)
        return out

    def feature_columns(self, columns: dict[str, Any]) -> dict[str, Any]:
        """Batch feature columns, with the same rules per value."""
        out: dict[str, Any] = {}
        for name, column in columns.items():
            if not self.keeps(name):
                continue
            if name in self.hashed:
                out[name] = [self.hash(v) for v in _values(column)]
            else:
                out[name] = self._text_column(column)
        return out

    def outputs(self, values: dict[str, Any]) -> dict[str, Any]:
        return {name: self.text(value) for name, value in values.items()}

    def output_columns(self, columns: dict[str, Any]) -> dict[str, Any]:
        return {name: self._text_column(column) for name, column in columns.items()}

    def _text_column(self, column: Any) -> Any:
        """The column unchanged when it holds no free text, else with the text rule applied."""
        if not _may_hold_text(column):
            return column
        lengths = getattr(getattr(column, "str", None), "len", None)
        if callable(lengths):  # a pandas Series of text: one vectorised check
            longest = lengths().max()
            if not longest > self.max_string_length:  # NaN (no text at all) included
                return column
        return [self.text(v) for v in _values(column)]


def _values(column: Any) -> list[Any]:
    tolist = getattr(column, "tolist", None)
    return list(tolist()) if callable(tolist) else list(column)


def _may_hold_text(column: Any) -> bool:
    kind = getattr(getattr(column, "dtype", None), "kind", None)
    return kind not in ("f", "i", "u", "b")  # numeric arrays hold no text
