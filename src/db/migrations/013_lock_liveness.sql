-- Liveness has one owner, membership: lock_acquire (003) decided by itself whether a holder is
-- live. It now reads the view live_members (012), the one definition of a live member; the view is
-- plain, so the planner flattens it into the same plan as before. Same signature, same body
-- otherwise; the function keeps the schema it was created in (as 010 set it).
create or replace function lock_acquire(
  p_space smallint, p_keys text[], p_mode text, p_lease bigint, p_holder text, p_epoch bigint,
  p_ttl_ms bigint, p_wait boolean, p_waiter bigint, p_waiter_ttl_ms int
) returns table (status text, token bigint, waiter bigint, retry_ms bigint, freed text[])
language plpgsql set search_path from current as $$
declare
  v_n int := cardinality(p_keys);
  v_target text := p_keys[cardinality(p_keys)];
  v_modes text[];
  v_freed text[];
  v_conflict boolean;
  v_until timestamptz;
  v_token bigint;
  v_reserved bigint;
begin
  v_modes := array_fill(case p_mode when 'X' then 'IX' else 'IS' end, array[v_n - 1]) || p_mode;
  perform lock_keys(p_space, p_keys);

  if not exists (select 1 from live_members m where m.instance_id = p_holder and m.epoch = p_epoch) then
    return query select 'not-member'::text, null::bigint, p_waiter, null::bigint, null::text[];
    return;
  end if;

  with dead as (
    select distinct l.lease_id from lock_leases l
    where l.space = p_space and l.name = any(p_keys)
      and (l.expires_at <= now() or not exists (
        select 1 from live_members m where m.instance_id = l.holder and m.epoch = l.epoch))
  ), gone as (
    delete from lock_leases l using dead where l.lease_id = dead.lease_id returning l.name, l.mode
  )
  select array_agg(gone.name) filter (where gone.mode in ('S', 'X')) into v_freed from gone;

  delete from lock_waiters w
  where w.space = p_space and w.name = any(p_keys)
    and (w.expires_at <= now() or not exists (
      select 1 from live_members m where m.instance_id = w.holder and m.epoch = w.epoch));

  select count(*) > 0, min(l.expires_at) into v_conflict, v_until
  from unnest(p_keys, v_modes) as r(k, m)
  join lock_leases l on l.space = p_space and l.name = r.k
  where not lock_compatible(l.mode, r.m) and l.lease_id <> p_lease;

  if not v_conflict then
    select exists (
      select 1 from unnest(p_keys, v_modes) as r(k, m)
      join lock_waiters w on w.space = p_space and w.name = r.k
      where not lock_compatible(w.mode, r.m) and (p_waiter is null or w.waiter_id < p_waiter)
    ) into v_conflict;
  end if;

  if v_conflict then
    if p_wait then
      if p_waiter is null then
        p_waiter := nextval('lock_waiter_ids');
      end if;
      insert into lock_waiters (space, name, waiter_id, mode, holder, epoch, expires_at)
        select p_space, r.k, p_waiter, r.m, p_holder, p_epoch, now() + p_waiter_ttl_ms * interval '1 millisecond'
        from unnest(p_keys, v_modes) as r(k, m)
        on conflict (space, name, waiter_id) do update set expires_at = excluded.expires_at;
    end if;
    perform lock_recount(p_space, p_keys);
    return query select 'blocked'::text, null::bigint, p_waiter,
      ceil(extract(epoch from v_until - now()) * 1000)::bigint, v_freed;
    return;
  end if;

  update lock_state s set last_token = s.last_token + 1
  where s.space = p_space and s.name = v_target
  returning s.last_token, s.reserved into v_token, v_reserved;
  if v_token > v_reserved then
    -- A new block of tokens: made durable before any token of it leaves this transaction.
    perform set_config('synchronous_commit', 'on', true);
    insert into lock_tokens as t (space, name, reserved) values (p_space, v_target, v_token + 999)
      on conflict (space, name) do update set reserved = greatest(t.reserved, excluded.reserved)
      returning t.reserved into v_reserved;
    update lock_state s set reserved = v_reserved where s.space = p_space and s.name = v_target;
  end if;

  insert into lock_leases (space, name, lease_id, mode, holder, epoch, token, expires_at)
    select p_space, r.k, p_lease, r.m, p_holder, p_epoch, v_token,
           case when p_ttl_ms is null then null else now() + p_ttl_ms * interval '1 millisecond' end
    from unnest(p_keys, v_modes) as r(k, m);
  if p_waiter is not null then
    delete from lock_waiters w where w.space = p_space and w.name = any(p_keys) and w.waiter_id = p_waiter;
  end if;
  perform lock_recount(p_space, p_keys);
  return query select 'granted'::text, v_token, null::bigint, null::bigint, v_freed;
end
$$;
