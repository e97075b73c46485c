-- The lock functions name their tables unqualified and ran with the caller's search_path, which a
-- connection through a pooler does not have. Each now carries the schema it was created in (the
-- migration runs with search_path set to it). lock_compatible reads no table and stays inlinable;
-- record_member_event (009) was created with its search_path already.
alter function lock_recount(smallint, text[]) set search_path from current;
alter function lock_keys(smallint, text[]) set search_path from current;
alter function lock_acquire(smallint, text[], text, bigint, text, bigint, bigint, boolean, bigint, int) set search_path from current;
alter function lock_release(smallint, text[], bigint) set search_path from current;
alter function lock_unwait(smallint, text[], bigint) set search_path from current;
