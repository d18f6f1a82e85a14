-- Statistics the detectors share, as WITH-lambdas (a fragment: the manifest puts
-- it at the detector's statistics marker, right after WITH). Every name starts
-- with sw_ so it cannot shadow a column. Counts are arrays aligned bin by bin.
--
-- One step of the modified Lentz method for a continued fraction b0 + a1/(b1 + a2/(b2 + ...)):
-- state (C, D, value) and the step's terms (a, b) (Numerical Recipes 5.2).
(v) -> if(abs(v) < 1e-300, 1e-300, v) AS sw_nonzero,
(acc, a, b) -> (sw_nonzero(b + a / acc.1), 1 / sw_nonzero(b + a * acc.2),
                acc.3 * sw_nonzero(b + a / acc.1) / sw_nonzero(b + a * acc.2)) AS sw_lentz_step,
-- PSI on smoothed proportions (add 0.5 per bin: an empty bin never divides by 0).
(counts) -> arrayMap(x -> (x + 0.5) / (arraySum(counts) + 0.5 * length(counts)), counts) AS sw_smoothed,
(b, c) -> arraySum(arrayMap((p, q) -> (q - p) * log(q / p), sw_smoothed(b), sw_smoothed(c))) AS sw_psi,
-- psi_drift's coarse bins, which the report's heat map shares: for numbers the
-- edges are the {bins}-quantiles of a histogram (the whole model's baseline: its
-- keys, deduplicated), and each fine bucket falls in the bin of how many edges lie
-- below its key; the counts are the numeric bins, then one bin per category name,
-- then MISSING. A window without calls gets zeros; bins empty in the whole model in
-- both windows are dropped (the PSI smoothing would count them).
(hist, bins) -> arrayDistinct(arrayMap(
        q -> mapKeys(hist)[arrayFirstIndex(s -> s >= q * arraySum(mapValues(hist)), arrayCumSum(mapValues(hist)))],
        arrayMap(i -> i / bins, range(1, bins)))) AS sw_decile_keys,
(hist, edges) -> arrayMap(k -> arrayCount(e -> e < k, edges), mapKeys(hist)) AS sw_key_bins,
(hist, key_bins, edges, cats, names, missing) -> arrayConcat(
        arrayMap(i -> arraySum(arrayFilter((v, j) -> j = i, mapValues(hist), key_bins)), range(length(edges) + 1)),
        arrayMap(name -> cats[name], names),
        [missing]) AS sw_bin_counts,
(counts, other) -> if(empty(counts), arrayWithConstant(length(other), 0.), counts) AS sw_bins_or_zeros,
(b, c) -> arrayMap((x, y) -> x + y > 0, b, c) AS sw_bins_in_use,
(counts, keep) -> arrayFilter((x, k) -> k, counts, keep) AS sw_bins_kept,
-- Jensen-Shannon distance, base 2, in [0, 1] (the square root of the divergence,
-- as scipy.spatial.distance.jensenshannon): raw proportions, 0 log 0 = 0.
(p, m) -> if(p > 0, p * log2(p / m), 0) AS sw_plogp,
(b, c) -> sqrt(greatest(0, 0.5 * arraySum(arrayMap(
        (p, q) -> sw_plogp(p, (p + q) / 2) + sw_plogp(q, (p + q) / 2),
        arrayMap(x -> x / arraySum(b), b), arrayMap(x -> x / arraySum(c), c))))) AS sw_js,
-- Chi-square test of homogeneity of two count vectors (a 2 x K table; bins empty
-- in both are left out), scaled to nb and nc observations: the histograms hold
-- weighted counts, the evidence is the calls received.
(b, c, nb, nc) -> arrayFilter((x, y) -> x + y > 0,
        arrayMap(x -> x * nb / arraySum(b), b), arrayMap(x -> x * nc / arraySum(c), c)) AS sw_kept_b,
(b, c, nb, nc) -> arrayFilter((y, x) -> x + y > 0,
        arrayMap(x -> x * nc / arraySum(c), c), arrayMap(x -> x * nb / arraySum(b), b)) AS sw_kept_c,
(b, c) -> arraySum(arrayMap(
        (x, y) -> pow(x - (x + y) * arraySum(b) / (arraySum(b) + arraySum(c)), 2)
                  / ((x + y) * arraySum(b) / (arraySum(b) + arraySum(c)))
                + pow(y - (x + y) * arraySum(c) / (arraySum(b) + arraySum(c)), 2)
                  / ((x + y) * arraySum(c) / (arraySum(b) + arraySum(c))),
        b, c)) AS sw_chi2_of,
-- Regularized upper incomplete gamma Q(a, x): the series for P below a + 1, the
-- continued fraction (modified Lentz) above (Numerical Recipes 6.2). The
-- fraction's terms are computed first, then folded one per step: a term or
-- state used in an expression is expanded into the query tree each time it
-- appears, and with nesting, planning a query took longer than running it.
(a, x) -> 1 - exp(-x + a * log(x) - lgamma(a + 1)) * arrayFold(
        (acc, n) -> (acc.1 * x / (a + n), acc.2 + acc.1 * x / (a + n)),
        range(1, 400), (1.0, 1.0)).2 AS sw_gamma_q_series,
(a, x) -> exp(-x + a * log(x) - lgamma(a)) * arrayFold(
        (acc, an, bn) -> sw_lentz_step(acc, an, bn),
        arrayMap(i -> -i * (i - a), range(1, 300)), arrayMap(i -> x + 1 - a + 2 * i, range(1, 300)),
        (1e300, 1 / (x + 1 - a), 1 / (x + 1 - a))).3 AS sw_gamma_q_fraction,
(a, x) -> if(x <= 0, 1.0, greatest(0.0, least(1.0,
        if(x < a + 1, sw_gamma_q_series(a, x), sw_gamma_q_fraction(a, x))))) AS sw_gamma_q,
-- The chi-square survival function: P(X > x) for `dof` degrees of freedom.
(x, dof) -> if(dof < 1, 1.0, sw_gamma_q(dof / 2, x / 2)) AS sw_chi2_sf,
-- The regularized incomplete beta I_x(a, b): its continued fraction by modified
-- Lentz (Numerical Recipes 6.4), on the side of x where it converges fast;
-- terms first, as for the gamma (term m: d_2m, then d_2m+1).
(a, b, x) -> arrayFlatten(arrayMap(
        m -> [m * (b - m) * x / ((a - 1 + 2 * m) * (a + 2 * m)),
              -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1 + 2 * m))],
        range(1, 200))) AS sw_beta_terms,
(a, b, x) -> arrayFold((acc, aa) -> sw_lentz_step(acc, aa, 1), sw_beta_terms(a, b, x),
        (1.0, 1 / sw_nonzero(1 - (a + b) * x / (a + 1)), 1 / sw_nonzero(1 - (a + b) * x / (a + 1)))).3
        AS sw_beta_fraction,
(a, b, x) -> if(x <= 0, 0.0, if(x >= 1, 1.0, if(x < (a + 1) / (a + b + 2),
        exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log(1 - x)) * sw_beta_fraction(a, b, x) / a,
        1 - exp(lgamma(a + b) - lgamma(a) - lgamma(b) + a * log(x) + b * log(1 - x))
            * sw_beta_fraction(b, a, 1 - x) / b))) AS sw_beta_inc,
-- Student's t, two-sided: P(|T| > |t|) for `dof` degrees of freedom.
(t, dof) -> greatest(0.0, least(1.0, sw_beta_inc(dof / 2, 0.5, dof / (dof + t * t)))) AS sw_student_t_2sf,
-- Kolmogorov's limiting distribution, P(K > t) (scipy.stats.kstwobign.sf): the
-- asymptotic p-value of the two-sample KS statistic D at t = D sqrt(nb nc / (nb + nc)).
(t) -> if(t < 0.05, 1.0, greatest(0.0, least(1.0, 2 * arraySum(arrayMap(
        j -> pow(-1, j - 1) * exp(-2 * j * j * t * t), range(1, 101)))))) AS sw_kolmogorov_sf,
-- Window means of a series laid out as [current, baseline windows...] (totals
-- and counts per window): the baseline windows with at least min_calls calls.
(totals, counts, min_calls) -> arrayFilter(x -> isFinite(x), arrayMap(
        (t, n) -> if(n >= min_calls, t / n, nan), arraySlice(totals, 2), arraySlice(counts, 2)))
        AS sw_window_means,
-- The median (the mean of the two middle values for an even count; NaN if empty).
(xs) -> if(length(xs) = 0, nan,
        (arraySort(xs)[intDiv(length(xs) + 1, 2)] + arraySort(xs)[intDiv(length(xs), 2) + 1]) / 2)
        AS sw_median,
-- The robust scale of window means, calibrated: 1.4826 MAD is the normal's
-- deviation only for many windows; for n of them it comes out small (and the
-- median moves too), so z = (x - median) / (1.4826 MAD) is not Student's t with
-- n - 1 degrees of freedom (n = 24: p < 0.001 five times as often as it should).
-- Calibrated by simulation (tests/clickhouse/test_calibration.py reruns it):
-- with the scale multiplied by n / (n - 1.1), z follows Student's t with 0.4 n
-- degrees of freedom: p < 0.05 comes within 15 % of 5 % of the time for
-- n = 5..72, p < 0.001 within a factor 0.5-1.4 of 0.1 % (even n conservative; the
-- test holds it to 0.4-1.6, the noise of its 200,000 draws a window count).
(xs) -> length(xs) / (length(xs) - 1.1) * 1.4826 * sw_median(arrayMap(x -> abs(x - sw_median(xs)), xs))
        AS sw_robust_scale,
(n) -> 0.4 * n AS sw_robust_dof,
-- The value a log-histogram key stands for (segwatch.collector.aggregate.histogram): gamma
-- = (1 + accuracy) / (1 - accuracy); key 0 is exact zero.
(k, gamma) -> if(k = 0, 0.0, sign(k) * 2 * pow(gamma, abs(k) - 16384) / (gamma + 1)) AS sw_key_value,
