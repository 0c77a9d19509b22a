-- setup.sql: what the edge copy needs in the warehouse (run it there once).
--
-- 1. An index on the watermark: pg_extract reads pages of
--    WHERE (updated_at, tenant, id) > (cursor) ORDER BY updated_at, tenant, id.
-- 2. updated_at must move on every change; the trigger below sets it, so
--    writers that forget it are caught too.
-- 3. A NOTIFY on every insert, update and delete (a soft delete is an
--    update of deleted_at): {"table":"users","op":"insert"|"update"|"delete",
--    "key":{"tenant":..,"id":..}} on channel users_changed, delivered when
--    the transaction commits. Notices are a wake-up for low latency; the
--    watermark extract is what guarantees that no insert or update is
--    missed, and the reconciliation (pipeline.yml's reconcile_dsn) that no
--    delete is (notices sent while the engine is away are lost). A delete
--    notice makes the engine read the row by key: when it is gone, its
--    delete is staged, and qload deletes it in the edge.
-- 4. A role for the engine that can only read the table.
--
-- The users table itself is the warehouse's; run.py creates this one:
--   CREATE TABLE users (tenant integer NOT NULL, id bigint NOT NULL, ...,
--       created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
--       deleted_at timestamptz NOT NULL DEFAULT '2999-12-31T00:00:00Z',
--       PRIMARY KEY (tenant, id));

CREATE INDEX IF NOT EXISTS users_watermark ON users (updated_at, tenant, id);

CREATE OR REPLACE FUNCTION users_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- clock_timestamp(), not now() (the transaction's start): the smaller
    -- the gap between updated_at and the commit, the fewer rows commit
    -- behind the cursor. Those that do are brought by their notices.
    IF TG_OP = 'INSERT' THEN
        NEW.updated_at := coalesce(NEW.updated_at, clock_timestamp());
    ELSIF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS users_touch ON users;
CREATE TRIGGER users_touch BEFORE INSERT OR UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION users_touch();

CREATE OR REPLACE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r users;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('users_changed', json_build_object('table', 'users',
        'op', lower(TG_OP), 'key', json_build_object('tenant', r.tenant, 'id', r.id))::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS users_notify ON users;
CREATE TRIGGER users_notify AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_notify();

DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'edge_reader') THEN
        CREATE ROLE edge_reader LOGIN;
    END IF;
END $$;
GRANT SELECT ON users TO edge_reader;
