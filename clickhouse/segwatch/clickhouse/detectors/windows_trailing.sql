-- The baseline is the trailing window before the current one, already in `live`.
windowed AS (SELECT * FROM live),
