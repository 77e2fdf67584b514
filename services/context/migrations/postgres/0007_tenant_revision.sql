-- Tenant configuration revisions, for optimistic concurrency: every write adds one (a new
-- tenant starts at 1, as do the tenants already stored), and PutTenant with expected_revision
-- writes only while the stored revision is that one, in the same statement
-- (UPDATE ... WHERE revision = $n), so of two writers that read the same revision one wins
-- and the other is told, instead of silently overwriting it. The app role's table-level
-- grants on tenants (SELECT, INSERT, UPDATE) cover the new column.

ALTER TABLE tenants ADD COLUMN revision bigint NOT NULL DEFAULT 1 CHECK (revision > 0);
