-- The audit log: hash-chained per tenant (see services/context/audit.py), append-only for the
-- application role: it gets SELECT and INSERT only, and a trigger refuses UPDATE, DELETE and
-- TRUNCATE for everyone, the owner included.

CREATE TABLE audit_logs (
  tenant_id      text NOT NULL,
  sequence       bigint NOT NULL,
  entry_id       text NOT NULL,
  correlation_id text NOT NULL DEFAULT '',
  actor          text NOT NULL DEFAULT '',
  action         text NOT NULL,
  session_id     text NOT NULL DEFAULT '',
  payload        jsonb NOT NULL DEFAULT '{}',
  "timestamp"    timestamptz NOT NULL,
  prev_hash      text NOT NULL,
  hash           text NOT NULL,
  PRIMARY KEY (tenant_id, sequence),
  UNIQUE (tenant_id, entry_id)
);
CREATE INDEX audit_logs_correlation ON audit_logs (tenant_id, correlation_id);

ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_logs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_logs
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE FUNCTION audit_logs_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION audit_logs_refuse_change();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
  FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_refuse_change();

GRANT SELECT, INSERT ON audit_logs TO metaagent_app;
