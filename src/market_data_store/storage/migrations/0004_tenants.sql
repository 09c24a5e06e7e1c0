-- Tenants (issue 20). Every bar belongs to a tenant, and the tenant is part of its key:
-- two tenants' bars of the same provider, symbol, resolution and ts are two rows.
--
-- Writes run as the table's owner, whom row-level security does not apply to
-- (PostgreSQL refuses COPY FROM to a role a policy applies to): the service stamps
-- tenant_id on every row from the request's token. Reads switch, for their
-- transaction, to this database's reader role, which the policy below does apply to,
-- with app.tenant_id set: a read sees its tenant's rows and nothing else, whatever its
-- SQL says; with no tenant set it sees no row.
--
-- Existing bars move to tenant 'default' (the only tenant of a store without
-- [auth.tenants]). The column keeps that default, so a replica of the previous
-- release still writing during a rolling upgrade stores its bars as 'default' (its
-- merges, keyed without the tenant, fail and are dead-lettered: replay them).
-- Adding a column with a constant default rewrites no row; the new primary key
-- rebuilds its index (writes wait for it: the migration holds the table's lock).
--
-- The tenant comes last in the key: first, every index comparison of every insert
-- would compare it (a collated text comparison) before the provider, and COPY took
-- 0.68-0.72 of 0.5.0's rows/s; last, it is compared only between rows of the same
-- provider, symbol, resolution and ts (0.99). Reads still range-scan the key (the
-- tenant a filter on the index's own tuples: another tenant's bars of the same
-- provider and symbol are passed over). Its format is the configuration's id rule
-- (config.schema.ID_PART), checked there; a regular expression here cost 0.1 of
-- COPY's rows/s, so the database bounds its length only.
ALTER TABLE bars ADD COLUMN tenant_id text NOT NULL DEFAULT 'default';
ALTER TABLE bars
    ADD CONSTRAINT bars_tenant_id_length CHECK (length(tenant_id) BETWEEN 1 AND 63),
    DROP CONSTRAINT bars_pkey,
    ADD PRIMARY KEY (provider, symbol, resolution, ts, tenant_id);

-- The reader role: one per database, named after it (roles are cluster-wide; a role
-- shared by two stores of one cluster would let the user of one read the other's
-- bars), recorded here for the service to read at its first read. Creating it needs
-- CREATEROLE; where the service's user has none, an administrator creates it
-- beforehand (docs/tenants.md: its name is mds_reader_ and the first 16 hex digits of
-- md5(<database name>)) and grants it to that user, and this skips both.
CREATE TABLE mds_reader_role (name text NOT NULL);
INSERT INTO mds_reader_role VALUES ('mds_reader_' || left(md5(current_database()), 16));

DO $$
DECLARE
    reader text := (SELECT name FROM mds_reader_role);
    sixteen boolean := current_setting('server_version_num')::int >= 160000;
    -- the service's user must be able to SET ROLE to it: PostgreSQL 16 makes the
    -- creator of a role a member that may not SET it (and knows the 'SET' privilege)
    needed text := CASE WHEN sixteen THEN 'SET' ELSE 'MEMBER' END;
    option text := CASE WHEN sixteen THEN ' WITH SET TRUE' ELSE '' END;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = reader) THEN
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT', reader);
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create it', reader, current_user
                    USING HINT = format('as an administrator: CREATE ROLE %I NOLOGIN; GRANT %I TO %I',
                                        reader, reader, current_user);
        END;
    END IF;
    IF NOT pg_has_role(current_user, reader, needed) THEN
        BEGIN
            EXECUTE format('GRANT %I TO %I', reader, current_user) || option;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION '% may not SET ROLE % and may not grant it', current_user, reader
                USING HINT = format('as an administrator: GRANT %I TO %I', reader, current_user);
        END;
    END IF;
    EXECUTE format('GRANT SELECT ON bars TO %I', reader);
    ALTER TABLE bars ENABLE ROW LEVEL SECURITY;  -- not FORCE: the owner (the writer) is exempt
    EXECUTE format(
        'CREATE POLICY bars_tenant_isolation ON bars FOR SELECT TO %I '
        'USING (tenant_id = current_setting(''app.tenant_id'', true))',
        reader
    );
END
$$;
