-- `[pos] wipe_after`: when the site last cleared its copies of the down
-- tables, and whether it still has to ask for the full sync that follows.
ALTER TABLE relaysync.site
    ADD COLUMN wiped_at timestamptz,
    ADD COLUMN resync_pending boolean NOT NULL DEFAULT false;
