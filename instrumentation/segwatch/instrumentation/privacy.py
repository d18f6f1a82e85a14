"""What a monitor may record: allow- and deny-lists, hashed identifiers, no free text.

Applied to every feature (and the text rule to every output) before it is put
on a span, for single calls and batches alike. Free text is any string longer
than ``max_string_length``: it is never recorded unless ``record_text`` is set,
and then only its first ``max_string_length`` characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RecordingPolicy"]


@dataclass(frozen=True)
class RecordingPolicy:
    """Which features are recorded and how; the defaults record every feature, no free text."""

    allow: frozenset[str] | None = None
    deny: frozenset[str] = field(default_factory=frozenset)
    hashed: frozenset[str] = field(default_factory=frozenset)
    hash_salt: str = ""
    max_string_length: int = 128
    record_text: bool = False

    @classmethod
    def build(
        cls,
        allow: Collection[str] | None = None,
        deny: Collection[str] = (),
        hashed: Collection[str] = (),
        hash_salt: str = "",
        max_string_length: int = 128,
        record_text: bool = False,
    ) -> RecordingPolicy:
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
            hash_salt=hash_salt,
            max_string_length=max_string_length,
            record_text=record_text,
        )

    def keeps(self, name: str) -> bool:
        return name not in self.deny and (self.allow is None or name in self.allow)

    def hash(self, value: Any) -> str | None:
        if value is None:
            return None
        text = self.hash_salt + str(value)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

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
