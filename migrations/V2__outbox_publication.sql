-- The publication the bridge's capture reads (DESIGN §1, §2).
--
-- Least privilege: creating a publication FOR TABLE requires owning the table, so the table owner
-- creates it here, in the monolith's migrations. The bridge then connects as a plain
-- `LOGIN REPLICATION` role that only checks the publication exists; it never needs ownership of, or
-- write access to, the monolith's tables.
--
-- Inserts only: outbox rows may be deleted right after they are written (or by a cleanup job), and
-- those deletes must never become events. Updates are not part of the outbox contract either.
CREATE PUBLICATION outbox_bridge FOR TABLE outbox WITH (publish = 'insert');
