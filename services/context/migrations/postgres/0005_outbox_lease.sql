-- Outbox leases: a relay that lists with a lease claims the messages it got until they are
-- marked or the lease runs out, so several relay replicas never publish the same message at
-- once, and a session's messages stay with one relay at a time (per-session order).

-- A relay restarted under the same claimant name takes its own leases back at once.

ALTER TABLE outbox ADD COLUMN leased_until timestamptz NOT NULL DEFAULT '-infinity';
ALTER TABLE outbox ADD COLUMN leased_by text NOT NULL DEFAULT '';
GRANT UPDATE (leased_until, leased_by) ON outbox TO metaagent_relay;
