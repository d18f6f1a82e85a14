-- segwatch: reads the roll-ups' maps of all: the window's and its trailing baseline's
-- The baseline is the trailing window before the current one, already in `live`.
windowed AS (SELECT *, '' AS compared_with FROM live),
