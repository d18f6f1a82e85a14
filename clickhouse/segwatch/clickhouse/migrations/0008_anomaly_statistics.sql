-- The numbers behind an anomaly: every statistic its detector computed (PSI,
-- Jensen-Shannon, KS and its p-value, Wasserstein-1, chi-square, how many
-- segments the run tested, ...), by name, beside the sentence in `details`.
ALTER TABLE ml_anomalies
    ADD COLUMN IF NOT EXISTS statistics Map(LowCardinality(String), Float64)
    COMMENT 'Every statistic the detector computed for this anomaly, by name (e.g. psi, ks, ks_p, js, wasserstein, chi2, chi2_p, fdr_tests)';
