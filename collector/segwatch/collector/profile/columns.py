"""Which field of a model each column of a table is: the config's names, then the convention.

One rule for every table that enters the pipeline (``segwatch backfill``'s
logged predictions; meant for ``segwatch baseline``'s training sets too):

1. A column named with its kind (``feature.x``, ``output.x``, ``metric.x``,
   ``context.x``, or the span attribute's own ``ml.feature.x`` ...) is that field.
2. A bare name the config declares for the model (``models.<m>.features``,
   ``outputs``, ``metrics``, ``contexts``) or as a global ``contexts`` entry is
   that field: a declared output ``score`` reads a column ``score``.
3. Any other bare name is a feature, as an undeclared span attribute would be.

A name declared in two sections, or two columns naming one field
(``score`` and ``output.score``), is refused: which one is meant is the user's call.
"""

from __future__ import annotations

from collections.abc import Iterable

from segwatch.collector.config.collector_config import CollectorConfig

__all__ = ["KINDS", "column_quantities"]

KINDS = ("feature", "output", "metric", "context")
"""Field kinds, as quantity names start (``feature.amount``)."""


def _declared_kinds(config: CollectorConfig, model: str) -> dict[str, list[str]]:
    """Bare name → the kinds the config declares it as, for ``model``."""
    kinds: dict[str, list[str]] = {name: ["context"] for name in config.contexts}
    declared = config.models.get(model)
    if declared is None:
        return kinds
    for kind, names in (("feature", declared.features), ("output", declared.outputs),
                        ("metric", declared.metrics), ("context", declared.contexts)):  # fmt: skip
        for name in names:
            if kind not in kinds.setdefault(name, []):
                kinds[name].append(kind)
    return kinds


def column_quantities(
    columns: Iterable[str], model: str, config: CollectorConfig | None = None
) -> dict[str, str]:
    """Each column's quantity name (``feature.amount``, ``output.score``), in column order.

    ``ValueError`` names the column when its field is ambiguous (declared in two
    sections) or taken by another column, or when its name is empty.
    """
    declared = _declared_kinds(config or CollectorConfig(), model)
    out: dict[str, str] = {}
    taken: dict[str, str] = {}  # quantity → the column that reads it
    for column in columns:
        name = column.removeprefix("ml.")
        kind, dot, rest = name.partition(".")
        if dot and kind in KINDS and rest:
            quantity = name
        elif not column.strip():
            raise ValueError("a column has an empty name: name every column of the header")
        else:
            kinds = declared.get(column, ["feature"])
            if len(kinds) > 1:
                raise ValueError(
                    f"column {column!r}: model {model!r} declares {column!r} as "
                    f"{' and '.join(kinds)}; name the column {kinds[0]}.{column} or "
                    f"{kinds[1]}.{column} to say which"
                )
            quantity = f"{kinds[0]}.{column}"
        if quantity in taken:
            raise ValueError(f"columns {taken[quantity]!r} and {column!r} are both {quantity}: "
                             "keep one")  # fmt: skip
        taken[quantity] = column
        out[column] = quantity
    return out
