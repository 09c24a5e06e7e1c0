-- Make bars a TimescaleDB hypertable when the extension can be used; on plain
-- PostgreSQL (no extension, or not preloaded) this is a no-op with a NOTICE.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
            PERFORM create_hypertable('bars', 'ts', if_not_exists => TRUE, migrate_data => TRUE);
        EXCEPTION WHEN OTHERS THEN
            RAISE NOTICE 'timescaledb not usable, bars stays a plain table: %', SQLERRM;
        END;
    ELSE
        RAISE NOTICE 'timescaledb not installed, bars stays a plain table';
    END IF;
END
$$;
