-- The hand-over queue: hand-overs to human agents (handoff_human and create_ticket actions)
-- waiting for an agent, in flight with one agent's connection under a lease, or done. Every
-- orchestrator replica serves the agents from it, so a hand-over is queued once and handed to
-- one connection whichever replica the agent watches on. Ids are unique per tenant; rows are
-- isolated per tenant like every table. Erasure deletes a user's rows (EraseUser).

CREATE TABLE handoff_queue (
  position      bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
  tenant_id     text NOT NULL,
  event_id      text NOT NULL,
  session_id    text NOT NULL,
  user_id       text NOT NULL DEFAULT '',
  kind          text NOT NULL,
  payload       jsonb NOT NULL,
  status        text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'done')),
  agent_id      text NOT NULL DEFAULT '',
  connection_id text NOT NULL DEFAULT '',
  lease_until   timestamptz NOT NULL DEFAULT '-infinity',
  attempts      integer NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX handoff_queue_waiting ON handoff_queue (tenant_id, status, position);
CREATE INDEX handoff_queue_user ON handoff_queue (tenant_id, user_id);
CREATE INDEX handoff_queue_session ON handoff_queue (tenant_id, session_id);

ALTER TABLE handoff_queue ENABLE ROW LEVEL SECURITY;
ALTER TABLE handoff_queue FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON handoff_queue
  USING (tenant_id = current_setting('app.current_tenant_id', true))
  WITH CHECK (tenant_id = current_setting('app.current_tenant_id', true));

GRANT SELECT, INSERT, UPDATE, DELETE ON handoff_queue TO metaagent_app;
