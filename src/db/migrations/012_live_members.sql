-- The one definition of a live member, owned by membership: a row whose status is not 'down'.
-- An expired row stays live until a peer declares it down (membership's sweep, with its
-- self-preservation rule), so work is taken from an instance only once the cluster agreed it is gone.
-- Every subsystem that asks "is the holder of this claim still alive?" reads this view; it is a
-- plain view, so the planner flattens it into the caller's query.
create view live_members as
  select instance_id, epoch, status, advertise_url, roles, metadata, pid, host, fail_after_ms,
         started_at, heartbeat_at, expires_at
  from members
  where status <> 'down';
