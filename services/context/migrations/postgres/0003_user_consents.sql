-- The seed's UserConsent, one row per (tenant, user), isolated per tenant like every table.

CREATE TABLE user_consents (
  tenant_id               text NOT NULL,
  user_id                 text NOT NULL,
  voice_recording_consent boolean NOT NULL DEFAULT false,
  data_learning_consent   boolean NOT NULL DEFAULT false,
  consent_date            timestamptz,
  revoked_date            timestamptz,
  PRIMARY KEY (tenant_id, user_id)
);

ALTER TABLE user_consents ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_consents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_consents
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

CREATE INDEX session_contexts_user ON session_contexts (tenant_id, user_id);

GRANT SELECT, INSERT, UPDATE, DELETE ON user_consents TO metaagent_app;
