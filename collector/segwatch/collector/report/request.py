"""What a report covers: which model, how far back, and the drift windows it compares.

:class:`ReportRequest` is what ``segwatch report`` and ``GET /report`` ask for,
validated once (a ``ValueError`` names the bad parameter); :class:`DriftSettings`
is psi_drift's window, baseline and thresholds as the config runs them, so the
report's heat map scores what the detector scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs

from segwatch.clickhouse.detection import DetectorSpec, load_manifest, parse_duration

__all__ = ["DEFAULT_SINCE", "MAX_SINCE", "DriftSettings", "ReportRequest", "ceil_to", "floor_to"]

DEFAULT_SINCE = 24 * 3600
"""How far back a report looks unless told otherwise: a day."""

MAX_SINCE = 400 * 86400
"""How far back a report may look: 400 days, a year and a season. A report reads every
minute aggregate of its period, which the store keeps unless
``storage.retention.aggregates`` says otherwise."""

_PARAMETERS = ("model", "since")


@dataclass(frozen=True)
class ReportRequest:
    """One model (None: every model with calls) over the last ``since`` seconds before ``at``.

    ``at`` None is now. ``since`` is a positive number of seconds, at most
    :data:`MAX_SINCE` (``ValueError``).
    """

    model: str | None = None
    since: int = DEFAULT_SINCE
    at: dt.datetime | None = None

    def __post_init__(self) -> None:
        if isinstance(self.since, bool) or not isinstance(self.since, int) or self.since <= 0:
            raise ValueError("'since' must be a positive number of seconds")
        if self.since > MAX_SINCE:
            raise ValueError(
                f"'since' must be at most {MAX_SINCE // 86400}d: a report reads every minute "
                "of its period"
            )
        if self.model is not None and (not isinstance(self.model, str) or not self.model):
            raise ValueError("'model' must be a non-empty model name")

    @classmethod
    def from_query_string(cls, text: str) -> ReportRequest:
        """``model=M&since=24h`` as ``GET /report`` takes it; ``ValueError`` names the parameter.

        ``since`` is a duration as ``segwatch anomalies --since`` takes it (30m, 24h, 7d).
        """
        params = parse_qs(text, keep_blank_values=True)
        unknown = sorted(set(params) - set(_PARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown query parameter(s) {', '.join(unknown)}: /report takes model and since"
            )
        for name in _PARAMETERS:
            if len(params.get(name, [])) > 1:
                raise ValueError(f"query parameter {name!r} given more than once")
        model = params.get("model", [""])[0] or None
        since = DEFAULT_SINCE
        if "since" in params:
            try:
                since = parse_duration(params["since"][0])
            except ValueError as exc:
                raise ValueError(f"query parameter 'since': {exc}") from None
        return cls(model=model, since=since)

    def moment(self) -> dt.datetime:
        """The report's end: ``at``, else now (UTC)."""
        at = self.at or dt.datetime.now(dt.timezone.utc)
        return at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class DriftSettings:
    """psi_drift's window, trailing baseline and cadence (seconds), bins, threshold and
    minimum support: the heat map bins and tests as the detector does."""

    window: int
    baseline: int
    cadence: int
    bins: int
    threshold: float
    min_support: int

    @classmethod
    def of(cls, specs: Sequence[DetectorSpec] | None = None) -> DriftSettings:
        """The settings of the ``psi_drift`` detector among ``specs`` (the configured
        detectors), else the manifest's (the detector disabled: the heat map still shows
        drift as it would measure it)."""
        configured = [] if specs is None else [s for s in specs if s.name == "psi_drift"]
        (spec,) = configured or [s for s in load_manifest() if s.name == "psi_drift"]
        parameters = spec.parameters
        return cls(
            window=spec.window,
            baseline=spec.baseline,
            cadence=spec.cadence,
            bins=int(parameters["bins"]),
            threshold=float(parameters["threshold"]),
            min_support=int(parameters["min_support"]),
        )


def floor_to(moment: dt.datetime, seconds: int) -> dt.datetime:
    """``moment`` rounded down to a multiple of ``seconds`` since the epoch (UTC)."""
    epoch = int(moment.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, dt.timezone.utc)


def ceil_to(moment: dt.datetime, seconds: int) -> dt.datetime:
    """``moment`` rounded up to a multiple of ``seconds`` since the epoch (UTC)."""
    epoch = int(moment.timestamp())
    return dt.datetime.fromtimestamp(-(-epoch // seconds) * seconds, dt.timezone.utc)
