-- The domain of a bar, enforced for every writer (the HTTP layer checks the same
-- rules first and reports them per field): finite values below 10^20 with at most
-- 18 decimals, volume >= 0, low <= min(open, close) <= max(open, close) <= high,
-- a resolution like 1m / 5m / 1h / 1d / 1mo, and a ts from 1800 to 2199 (beyond,
-- PostgreSQL stores dates that client drivers cannot read back).
ALTER TABLE bars
    ADD CONSTRAINT bars_values_in_range CHECK (
        abs(open) < 1e20 AND abs(high) < 1e20 AND abs(low) < 1e20
        AND abs(close) < 1e20 AND volume < 1e20
        AND scale(open) <= 18 AND scale(high) <= 18 AND scale(low) <= 18
        AND scale(close) <= 18 AND scale(volume) <= 18
    ),
    ADD CONSTRAINT bars_volume_not_negative CHECK (volume >= 0),
    ADD CONSTRAINT bars_ohlc_consistent CHECK (
        low <= least(open, close) AND greatest(open, close) <= high
    ),
    ADD CONSTRAINT bars_resolution_format CHECK (resolution ~ '^[1-9][0-9]{0,3}(mo|s|m|h|d|w)$'),
    ADD CONSTRAINT bars_ts_in_range CHECK (
        ts >= '1800-01-01T00:00:00Z' AND ts < '2200-01-01T00:00:00Z'
    );
