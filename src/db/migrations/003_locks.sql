-- Locks: fenced leases. A lease is one row per resource key it covers (a plain name: one key; a
-- path a/b/c: intention entries on a and a/b plus the real mode on a/b/c). Acquirers serialise per
-- key on lock_state rows, taken in key order, so every check below sees the others' commits.
--
-- Plain names also keep counts of holders and waiters per mode on their lock_state row, so an
-- uncontended acquire or release is one UPDATE of that row (see src/locks/store.ts): PostgreSQL
-- re-checks an UPDATE's conditions on the newest version of the row it waited for, which makes the
-- single statement safe. The counts may run high (a reaped lease), never low: anything unusual
-- falls through to lock_acquire, which counts again from the rows.
--
-- Fencing tokens come from lock_state.last_token (unlogged, fast) and never pass
-- lock_tokens.reserved (logged, committed synchronously before a token of its block is handed
-- out). When a crash empties the unlogged tables, counters restart from the reserved mark, so
-- tokens still increase. Leases and waiters are unlogged: a crash releases them, and every
-- holder notices because its membership row is gone too.

create table lock_tokens (
  space    smallint not null,
  name     text collate "C" not null,
  reserved bigint not null,
  primary key (space, name)
);

create unlogged table lock_state (
  space      smallint not null,
  name       text collate "C" not null,
  last_token bigint not null,
  reserved   bigint not null,
  -- plain names only: holders and queued waiters per mode (see above)
  n_s        int not null default 0,
  n_x        int not null default 0,
  w_s        int not null default 0,
  w_x        int not null default 0,
  primary key (space, name)
);

create unlogged table lock_leases (
  space       smallint not null,
  name        text collate "C" not null,
  lease_id    bigint not null,
  mode        text not null check (mode in ('S', 'X', 'IS', 'IX')),
  holder      text not null,
  epoch       bigint not null,
  token       bigint not null,
  acquired_at timestamptz not null default now(),
  expires_at  timestamptz,
  primary key (space, name, lease_id)
);

create index lock_leases_lease on lock_leases (lease_id);

create unlogged table lock_waiters (
  space      smallint not null,
  name       text collate "C" not null,
  waiter_id  bigint not null,
  mode       text not null check (mode in ('S', 'X', 'IS', 'IX')),
  holder     text not null,
  epoch      bigint not null,
  expires_at timestamptz not null,
  primary key (space, name, waiter_id)
);

create sequence lock_waiter_ids;

-- The usual multiple-granularity matrix: intentions go together, S goes with S and IS, X with nothing.
create function lock_compatible(a text, b text) returns boolean
language sql immutable parallel safe as $$
  select not (a = 'X' or b = 'X' or (a = 'S' and b = 'IX') or (a = 'IX' and b = 'S'))
$$;

-- Counts again, from the rows, the holders and waiters of plain names among `keys`.
create function lock_recount(p_space smallint, p_keys text[]) returns void
language sql as $$
  update lock_state s set
    n_s = (select count(*) from lock_leases l where l.space = s.space and l.name = s.name and l.mode = 'S'),
    n_x = (select count(*) from lock_leases l where l.space = s.space and l.name = s.name and l.mode = 'X'),
    w_s = (select count(*) from lock_waiters w where w.space = s.space and w.name = s.name and w.mode = 'S'),
    w_x = (select count(*) from lock_waiters w where w.space = s.space and w.name = s.name and w.mode = 'X')
  where p_space = 0 and s.space = p_space and s.name = any(p_keys)
$$;

-- Locks the state rows of `keys` (creating missing ones from the reserved mark), in key order.
create function lock_keys(p_space smallint, p_keys text[]) returns void
language plpgsql as $$
declare
  v_locked int;
begin
  loop
    select count(*) into v_locked from (
      select 1 from lock_state where space = p_space and name = any(p_keys) order by name for update
    ) x;
    exit when v_locked = cardinality(p_keys);
    insert into lock_state (space, name, last_token, reserved)
      select p_space, k, coalesce(t.reserved, 0), coalesce(t.reserved, 0)
      from unnest(p_keys) as k
      left join lock_tokens t on t.space = p_space and t.name = k
      order by k collate "C"
      on conflict do nothing;
  end loop;
end
$$;

-- One attempt to take a lease. `keys` are the ancestors then the target; the target gets `mode`
-- ('S' or 'X'), ancestors the matching intention. Dead leases (holder down, epoch replaced, TTL
-- passed) on these keys are removed first. Queued waiters that came earlier and conflict go first.
-- status: 'granted' (token), 'blocked' (waiter id when p_wait, ms until a blocking TTL runs out),
-- or 'not-member' (the caller's epoch is not live). `freed` names the targets of removed leases.
create function lock_acquire(
  p_space smallint, p_keys text[], p_mode text, p_lease bigint, p_holder text, p_epoch bigint,
  p_ttl_ms bigint, p_wait boolean, p_waiter bigint, p_waiter_ttl_ms int
) returns table (status text, token bigint, waiter bigint, retry_ms bigint, freed text[])
language plpgsql as $$
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

  if not exists (select 1 from members m where m.instance_id = p_holder and m.epoch = p_epoch and m.status <> 'down') then
    return query select 'not-member'::text, null::bigint, p_waiter, null::bigint, null::text[];
    return;
  end if;

  with dead as (
    select distinct l.lease_id from lock_leases l
    where l.space = p_space and l.name = any(p_keys)
      and (l.expires_at <= now() or not exists (
        select 1 from members m where m.instance_id = l.holder and m.epoch = l.epoch and m.status <> 'down'))
  ), gone as (
    delete from lock_leases l using dead where l.lease_id = dead.lease_id returning l.name, l.mode
  )
  select array_agg(gone.name) filter (where gone.mode in ('S', 'X')) into v_freed from gone;

  delete from lock_waiters w
  where w.space = p_space and w.name = any(p_keys)
    and (w.expires_at <= now() or not exists (
      select 1 from members m where m.instance_id = w.holder and m.epoch = w.epoch and m.status <> 'down'));

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

-- Releases a lease. Takes the same key locks as acquirers, so a waiter that registered before this
-- runs is seen by the check below. wake: someone waits on one of these keys.
create function lock_release(p_space smallint, p_keys text[], p_lease bigint)
returns table (released boolean, wake boolean)
language plpgsql as $$
declare
  v_count int;
begin
  perform lock_keys(p_space, p_keys);
  delete from lock_leases l where l.space = p_space and l.name = any(p_keys) and l.lease_id = p_lease;
  get diagnostics v_count = row_count;
  perform lock_recount(p_space, p_keys);
  return query select v_count > 0,
    exists (select 1 from lock_waiters w where w.space = p_space and w.name = any(p_keys));
end
$$;

-- A waiter gives up (timeout, abort). Later waiters it was holding back may now go: wake says so.
create function lock_unwait(p_space smallint, p_keys text[], p_waiter bigint)
returns boolean
language plpgsql as $$
begin
  perform lock_keys(p_space, p_keys);
  delete from lock_waiters w where w.space = p_space and w.name = any(p_keys) and w.waiter_id = p_waiter;
  perform lock_recount(p_space, p_keys);
  return exists (select 1 from lock_waiters w where w.space = p_space and w.name = any(p_keys));
end
$$;
