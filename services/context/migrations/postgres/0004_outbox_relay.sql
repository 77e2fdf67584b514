-- The outbox relay reads and marks every tenant's pending actions. It does so through its own
-- login, a member of metaagent_relay, whose policy covers the outbox and nothing else; the
-- service's tenant-scoped role (metaagent_app) keeps seeing one tenant at a time.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metaagent_relay') THEN
    CREATE ROLE metaagent_relay NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO metaagent_relay;
GRANT SELECT ON outbox TO metaagent_relay;
GRANT UPDATE (status, attempts, last_error) ON outbox TO metaagent_relay;
CREATE POLICY outbox_relay ON outbox TO metaagent_relay USING (true) WITH CHECK (true);
