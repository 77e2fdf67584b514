-- Sessions, turns, tenant configuration and the action outbox, isolated per tenant. Ids are
-- unique per tenant, so no tenant can learn from a collision that another tenant's id exists.
--
-- Runs as the owner role. The service connects as a login role that is a member of
-- metaagent_app, which owns nothing, and sees only the rows of the tenant set with
-- set_config('app.current_tenant_id', $1, true) in its transaction. With no tenant set,
-- current_setting(..., true) is NULL and every policy matches zero rows.

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'metaagent_app') THEN
    CREATE ROLE metaagent_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

CREATE TABLE tenants (
  tenant_id  text PRIMARY KEY,
  config     jsonb NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE session_contexts (
  tenant_id     text NOT NULL,
  session_id    text NOT NULL,
  user_id       text NOT NULL DEFAULT '',
  channel       integer NOT NULL DEFAULT 0,
  short_context jsonb NOT NULL DEFAULT '{}',
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz,
  fence         bigint NOT NULL DEFAULT 0,
  folded_seq    integer NOT NULL DEFAULT 0,
  PRIMARY KEY (tenant_id, session_id)
);

CREATE TABLE conversation_turns (
  turn_id        text NOT NULL,
  tenant_id      text NOT NULL,
  session_id     text NOT NULL,
  seq            integer NOT NULL,
  role           smallint NOT NULL,
  text           text NOT NULL,
  actions        jsonb NOT NULL DEFAULT '[]',
  metadata       jsonb NOT NULL DEFAULT '{}',
  correlation_id text NOT NULL DEFAULT '',
  "timestamp"    timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, turn_id),
  UNIQUE (tenant_id, session_id, seq),
  FOREIGN KEY (tenant_id, session_id) REFERENCES session_contexts ON DELETE CASCADE
);

CREATE TABLE outbox (
  position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  message_id     text NOT NULL,
  tenant_id      text NOT NULL,
  session_id     text NOT NULL,
  turn_id        text NOT NULL,
  correlation_id text NOT NULL DEFAULT '',
  action_type    text NOT NULL,
  payload        jsonb NOT NULL,
  status         smallint NOT NULL,
  attempts       integer NOT NULL DEFAULT 0,
  last_error     text NOT NULL DEFAULT '',
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, message_id),
  FOREIGN KEY (tenant_id, turn_id) REFERENCES conversation_turns ON DELETE CASCADE
);
CREATE INDEX outbox_pending ON outbox (status, position);

-- Every tenant table: RLS enabled and forced (the owner too), one policy for reads and writes.
DO $$
DECLARE
  tenant_table text;
BEGIN
  FOREACH tenant_table IN ARRAY ARRAY['tenants', 'session_contexts', 'conversation_turns', 'outbox']
  LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %I '
      'USING (tenant_id = current_setting(''app.current_tenant_id'', true)) '
      'WITH CHECK (tenant_id = current_setting(''app.current_tenant_id'', true))',
      tenant_table
    );
  END LOOP;
END
$$;

GRANT USAGE ON SCHEMA public TO metaagent_app;
GRANT SELECT, INSERT, UPDATE ON tenants TO metaagent_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON session_contexts, conversation_turns, outbox TO metaagent_app;
