-- OHLCV bars, one row per (provider, symbol, resolution, ts).
-- Prices are unconstrained numeric: stored exactly as received (scale included).
CREATE TABLE bars (
    provider    text        NOT NULL,
    symbol      text        NOT NULL,
    resolution  text        NOT NULL,
    ts          timestamptz NOT NULL,
    open        numeric     NOT NULL,
    high        numeric     NOT NULL,
    low         numeric     NOT NULL,
    close       numeric     NOT NULL,
    volume      numeric     NOT NULL,
    delayed     boolean     NOT NULL DEFAULT false,
    -- when the store first accepted this key, and when it accepted the version stored now
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, symbol, resolution, ts)
);
-- Reads name provider, symbol and resolution and scan a ts range: the primary key
-- serves them. No other index: each one costs every write (~15 % measured).
