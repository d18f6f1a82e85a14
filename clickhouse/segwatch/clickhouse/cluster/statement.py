"""One SQL statement's tokens, with edits by token: what the cluster renderers work on."""

from __future__ import annotations

from segwatch.clickhouse.sql_text import Token, tokens

__all__ = ["ClusterRenderError", "Statement", "unquoted"]


class ClusterRenderError(ValueError):
    """A migration statement that has no safe cluster form (the message says why)."""


class Statement:
    """One statement's text and its significant tokens, with edits by token."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokens(text)

    def keywords(self, start: int, count: int) -> tuple[str, ...]:
        return tuple(token.keyword() for token in self.tokens[start : start + count])

    def after_if(self, index: int, words: tuple[str, ...]) -> tuple[int, str]:
        """(the index past ``IF [NOT] EXISTS`` at ``index``, that text) or (``index``, "")."""
        if self.keywords(index, len(words)) == words:
            return index + len(words), " ".join(words) + " "
        return index, ""

    def name_at(self, index: int) -> str:
        """The unqualified table name at ``index``; a ``db.table`` name is refused."""
        if index >= len(self.tokens) or self.tokens[index].kind not in ("word", "ident"):
            raise ClusterRenderError(f"expected a table name in: {self.text[:80]}")
        if index + 1 < len(self.tokens) and self.tokens[index + 1].text == ".":
            raise ClusterRenderError(
                f"names qualified with a database are not rendered: {self.text[:80]}"
            )
        return unquoted(self.tokens[index])

    def find(self, keyword: str, start: int = 0) -> int | None:
        """The index of the first ``keyword`` outside brackets from ``start``, if any."""
        for index in range(start, len(self.tokens)):
            token = self.tokens[index]
            if token.depth == 0 and token.keyword() == keyword:
                return index
        return None

    def closing(self, index: int) -> int:
        """The index of the bracket closing the one opened at ``index``."""
        depth = self.tokens[index].depth
        for end in range(index + 1, len(self.tokens)):
            if self.tokens[end].depth == depth and self.tokens[end].text in ")]":
                return end
        raise ClusterRenderError(f"unbalanced brackets in: {self.text[:80]}")

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The text offsets from token ``first`` to the end of token ``last``."""
        end = self.tokens[last]
        return self.tokens[first].start, end.start + len(end.text)

    def edited(self, edits: list[tuple[int, int, str]]) -> str:
        """The text with each (start, end, replacement) applied; edits must not overlap."""
        text = self.text
        for start, end, replacement in sorted(edits, reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    def replace_token(self, index: int, replacement: str) -> tuple[int, int, str]:
        return (*self.span(index, index), replacement)

    def comment(self) -> str:
        """`` COMMENT '...'`` when the statement ends with a table's (or view's) comment."""
        last = self.tokens[-2:]
        if len(last) == 2 and last[0].depth == 0 and last[0].keyword() == "COMMENT":
            return f" COMMENT {last[1].text}" if last[1].kind == "string" else ""
        return ""


def unquoted(token: Token) -> str:
    return token.text[1:-1] if token.kind == "ident" else token.text
