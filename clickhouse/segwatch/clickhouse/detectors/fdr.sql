-- Benjamini-Hochberg false-discovery control over every test of one run (a
-- fragment: the manifest puts it at the detector's fdr marker). Reads the
-- detector's `tested` (one row per segment and quantity tested, with p_value,
-- and fdr_family: the detector the test belongs to, when one query serves
-- several) and defines `significant`: the tests BH rejects at level {fdr}, i.e.
-- per family the k smallest p-values, for the largest k with
-- p_(k) <= k / m * fdr (m tests).
-- Thousands of segments tested at once then raise about fdr * (discoveries)
-- false alarms, not 5 % of every segment.
-- A test whose score does not pass the detector's threshold is never reported;
-- detectors give it p = 1 rather than compute its tail. That is conservative:
-- with some p-values raised, BH rejects a subset of what it would reject with
-- the exact ones (every test still counts in m). Nested, not two CTEs: a CTE read
-- twice is computed twice.
significant AS (
    SELECT *
    FROM (
        SELECT *,
               max(if(p_value <= fdr_rank / fdr_tests * {fdr:Float64}, fdr_rank, 0))
                   OVER (PARTITION BY fdr_family) AS fdr_cut
        FROM (
            SELECT *,
                   row_number() OVER (PARTITION BY fdr_family ORDER BY p_value ASC, score DESC) AS fdr_rank
            FROM (SELECT *, count() OVER (PARTITION BY fdr_family) AS fdr_tests FROM tested)
            -- p = 1 is never rejected (fdr < 1) and ranks after every smaller p:
            -- leaving those tests out of the sort changes no rank that matters
            WHERE p_value < 1
        )
    )
    WHERE fdr_rank <= fdr_cut
),
