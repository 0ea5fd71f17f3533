-- What the bridge's capture reads with plain SQL, granted to one group role (DESIGN §7).
--
-- When the slot is lost, capture's default recovery (`--on-slot-loss resync-outbox`) re-publishes
-- the outbox rows of the gap from a snapshot: it reads `outbox`, and the cut `bridge outbox prune`
-- records in `outbox_bridge_pruned` (rows before it may be gone, so the resync must know it).
-- The production capture role is `LOGIN REPLICATION IN ROLE outbox_bridge_reader` and nothing
-- more; without these grants every restart after a slot loss stopped on "permission denied".
--
-- The horizon table is made here, by the table owner, so the grant can name it before the first
-- prune (prune creates it only where it is missing). Roles are cluster-wide: another database
-- migrated the same way reuses the role. Creating it needs CREATEROLE (RDS's master user has it).

CREATE TABLE IF NOT EXISTS outbox_bridge_pruned (
    outbox text PRIMARY KEY,
    pruned_before timestamptz NOT NULL,
    pruned_at timestamptz NOT NULL
);

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_bridge_reader') THEN
        CREATE ROLE outbox_bridge_reader NOLOGIN;
    END IF;
END
$$;

GRANT SELECT ON outbox, outbox_bridge_pruned TO outbox_bridge_reader;
