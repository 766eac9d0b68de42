-- Raises `message` as an error: HO's merge refuses a site row it must not
-- store from inside a statement; the row-by-row merge that follows then
-- rejects that row, with the message, into relaysync.rejects.
CREATE FUNCTION relaysync.refuse(message text) RETURNS bigint
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING MESSAGE = message, ERRCODE = 'unique_violation';
END $$;
