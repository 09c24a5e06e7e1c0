-- The other kinds of market data (issue 20): options, quotes, trades, fundamentals and
-- news, one table each, laid out as bars are: tenant_id and provider in every key (the
-- tenant last), values as received (numerics exact, scale included), ingested_at and
-- updated_at for the upsert that keeps the most recently accepted version. The CHECKs
-- hold the domain ingest checks first (ingest/facts.py; storage/facts.py lists the
-- columns in the order the service writes them): lengths, ranges, signs, scales,
-- counts, the URL's scheme. What a text may hold (printable ASCII for symbols and ids,
-- no control character in a title) ingest alone checks: a regular expression per row
-- cost COPY a tenth of its rows/s on bars (0004). Row-level security as on bars
-- (0004): writes run as the owner, reads as this database's reader role with
-- app.tenant_id set for their transaction.
CREATE TABLE options (
    tenant_id          text        NOT NULL DEFAULT 'default',
    provider           text        NOT NULL,
    symbol             text        NOT NULL,
    expiry             timestamptz NOT NULL,
    strike             numeric     NOT NULL,
    option_type        text        NOT NULL,
    ts                 timestamptz NOT NULL,
    bid                numeric,
    ask                numeric,
    last               numeric,
    volume             bigint      NOT NULL DEFAULT 0,
    open_interest      bigint      NOT NULL DEFAULT 0,
    implied_volatility numeric,
    delta              numeric,
    gamma              numeric,
    theta              numeric,
    vega               numeric,
    delayed            boolean     NOT NULL DEFAULT false,
    ingested_at        timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    -- the snapshot time right after the symbol: a chain at a time, or a time range,
    -- is one range scan
    PRIMARY KEY (provider, symbol, ts, expiry, option_type, strike, tenant_id),
    CONSTRAINT options_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    CONSTRAINT options_provider_length CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT options_symbol_length CHECK (length(symbol) BETWEEN 1 AND 32),
    CONSTRAINT options_option_type CHECK (option_type IN ('C', 'P')),
    CONSTRAINT options_strike_positive CHECK (strike > 0),
    CONSTRAINT options_values_in_range CHECK (
        abs(strike) < 1e20 AND scale(strike) <= 18
        AND abs(bid) < 1e20 AND scale(bid) <= 18 AND abs(ask) < 1e20 AND scale(ask) <= 18
        AND abs(last) < 1e20 AND scale(last) <= 18
        AND abs(implied_volatility) < 1e20 AND scale(implied_volatility) <= 18
        AND abs(delta) < 1e20 AND scale(delta) <= 18 AND abs(gamma) < 1e20 AND scale(gamma) <= 18
        AND abs(theta) < 1e20 AND scale(theta) <= 18 AND abs(vega) < 1e20 AND scale(vega) <= 18
    ),
    CONSTRAINT options_counts_not_negative CHECK (volume >= 0 AND open_interest >= 0),
    CONSTRAINT options_iv_not_negative CHECK (implied_volatility >= 0),
    CONSTRAINT options_ts_in_range CHECK (
        ts >= '1800-01-01T00:00:00Z' AND ts < '2200-01-01T00:00:00Z'
        AND expiry >= '1800-01-01T00:00:00Z' AND expiry < '2200-01-01T00:00:00Z'
    )
);

CREATE TABLE quotes (
    tenant_id   text        NOT NULL DEFAULT 'default',
    provider    text        NOT NULL,
    symbol      text        NOT NULL,
    "timestamp" timestamptz NOT NULL,
    bid         numeric,
    ask         numeric,
    last        numeric,
    bid_size    bigint,
    ask_size    bigint,
    volume      bigint      NOT NULL DEFAULT 0,
    delayed     boolean     NOT NULL DEFAULT false,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, symbol, "timestamp", tenant_id),
    CONSTRAINT quotes_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    CONSTRAINT quotes_provider_length CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT quotes_symbol_length CHECK (length(symbol) BETWEEN 1 AND 32),
    CONSTRAINT quotes_values_in_range CHECK (
        abs(bid) < 1e20 AND scale(bid) <= 18 AND abs(ask) < 1e20 AND scale(ask) <= 18
        AND abs(last) < 1e20 AND scale(last) <= 18
    ),
    CONSTRAINT quotes_counts_not_negative CHECK (bid_size >= 0 AND ask_size >= 0 AND volume >= 0),
    CONSTRAINT quotes_timestamp_in_range CHECK (
        "timestamp" >= '1800-01-01T00:00:00Z' AND "timestamp" < '2200-01-01T00:00:00Z'
    )
);

CREATE TABLE trades (
    tenant_id   text        NOT NULL DEFAULT 'default',
    provider    text        NOT NULL,
    symbol      text        NOT NULL,
    ts          timestamptz NOT NULL,
    trade_id    text        NOT NULL,
    price       numeric     NOT NULL,
    size        bigint      NOT NULL,
    exchange    text,
    conditions  text[]      NOT NULL DEFAULT '{}',
    ingested_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, symbol, ts, trade_id, tenant_id),
    CONSTRAINT trades_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    CONSTRAINT trades_provider_length CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT trades_symbol_length CHECK (length(symbol) BETWEEN 1 AND 32),
    CONSTRAINT trades_trade_id_length CHECK (length(trade_id) BETWEEN 1 AND 64),
    CONSTRAINT trades_exchange_length CHECK (length(exchange) BETWEEN 1 AND 16),
    CONSTRAINT trades_price_in_range CHECK (abs(price) < 1e20 AND scale(price) <= 18),
    CONSTRAINT trades_size_not_negative CHECK (size >= 0),
    CONSTRAINT trades_conditions CHECK (
        cardinality(conditions) <= 16 AND array_position(conditions, NULL) IS NULL
        AND length(array_to_string(conditions, '')) <= 256
    ),
    CONSTRAINT trades_ts_in_range CHECK (
        ts >= '1800-01-01T00:00:00Z' AND ts < '2200-01-01T00:00:00Z'
    )
);

CREATE TABLE fundamentals (
    tenant_id         text        NOT NULL DEFAULT 'default',
    provider          text        NOT NULL,
    symbol            text        NOT NULL,
    asof              date        NOT NULL,
    total_assets      numeric,
    total_liabilities numeric,
    net_income        numeric,
    eps               numeric,
    ingested_at       timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, symbol, asof, tenant_id),
    CONSTRAINT fundamentals_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    CONSTRAINT fundamentals_provider_length CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT fundamentals_symbol_length CHECK (length(symbol) BETWEEN 1 AND 32),
    CONSTRAINT fundamentals_values_in_range CHECK (
        abs(total_assets) < 1e20 AND scale(total_assets) <= 18
        AND abs(total_liabilities) < 1e20 AND scale(total_liabilities) <= 18
        AND abs(net_income) < 1e20 AND scale(net_income) <= 18
        AND abs(eps) < 1e20 AND scale(eps) <= 18
    ),
    CONSTRAINT fundamentals_asof_in_range CHECK (asof >= '1800-01-01' AND asof < '2200-01-01')
);

CREATE TABLE news (
    tenant_id       text        NOT NULL DEFAULT 'default',
    provider        text        NOT NULL,
    article_id      text        NOT NULL,
    symbols         text[]      NOT NULL DEFAULT '{}',
    title           text        NOT NULL,
    url             text        NOT NULL,
    published_at    timestamptz NOT NULL,
    sentiment_score numeric,
    ingested_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, article_id, tenant_id),
    CONSTRAINT news_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    CONSTRAINT news_provider_length CHECK (length(provider) BETWEEN 1 AND 64),
    CONSTRAINT news_article_id_length CHECK (length(article_id) BETWEEN 1 AND 128),
    CONSTRAINT news_symbols CHECK (
        cardinality(symbols) <= 32 AND array_position(symbols, NULL) IS NULL
    ),
    CONSTRAINT news_title_length CHECK (length(title) BETWEEN 1 AND 1000),
    CONSTRAINT news_url CHECK (
        length(url) <= 2048 AND (left(url, 7) = 'http://' OR left(url, 8) = 'https://')
    ),
    CONSTRAINT news_sentiment_in_range CHECK (
        sentiment_score BETWEEN -1 AND 1 AND scale(sentiment_score) <= 18
    ),
    CONSTRAINT news_published_at_in_range CHECK (
        published_at >= '1800-01-01T00:00:00Z' AND published_at < '2200-01-01T00:00:00Z'
    )
);
-- Reads of news range over published_at (an article names its symbols in an array).
CREATE INDEX news_published ON news (provider, published_at);

DO $$
DECLARE
    reader text := (SELECT name FROM mds_reader_role);
    kind text;
BEGIN
    FOREACH kind IN ARRAY ARRAY['options', 'quotes', 'trades', 'fundamentals', 'news'] LOOP
        EXECUTE format('GRANT SELECT ON %I TO %I', kind, reader);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', kind);
        EXECUTE format(
            'CREATE POLICY %I ON %I FOR SELECT TO %I '
            'USING (tenant_id = current_setting(''app.tenant_id'', true))',
            kind || '_tenant_isolation', kind, reader
        );
    END LOOP;
END
$$;
