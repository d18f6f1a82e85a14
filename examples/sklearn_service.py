"""An unmodified scikit-learn "service": it trains a model and predicts, nothing else.

Run it under OpenTelemetry auto-instrumentation and segwatch monitors it (the README's
commands; tests/test_examples.py runs them in a venv holding only what the pip line
brings):

    pip install "segwatch[sdk]" opentelemetry-distro scikit-learn pandas
    segwatch collector &        # OTLP/gRPC on 127.0.0.1:4317 (needs "segwatch[collector]")
    OTEL_SERVICE_NAME=churn-service OTEL_TRACES_EXPORTER=otlp OTEL_METRICS_EXPORTER=none \\
    OTEL_LOGS_EXPORTER=none OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4317 \\
    opentelemetry-instrument python examples/sklearn_service.py

(opentelemetry-distro sends OTLP over gRPC unless OTEL_EXPORTER_OTLP_PROTOCOL says
otherwise.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

rng = np.random.default_rng(0)
train = pd.DataFrame({
    "tenure_months": rng.integers(1, 72, 500),
    "monthly_spend": rng.lognormal(3.5, 0.5, 500).round(2),
    "support_calls": rng.poisson(1.5, 500),
})  # fmt: skip
churned = (train["support_calls"] * 0.8 - train["tenure_months"] * 0.05 + rng.normal(0, 1, 500)) > 0

model = make_pipeline(StandardScaler(), LogisticRegression()).fit(train, churned)
model.segwatch_model_name = "churn"  # optional: the name in segwatch (default: the class name)

for start in range(0, 200, 20):  # requests of 20 customers each
    batch = train.iloc[start : start + 20]
    model.predict_proba(batch)
print("predicted 200 customers in 10 requests")
