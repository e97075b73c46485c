-- Dashboard: the live figures each instance reports every few seconds (unlogged: they are only
-- worth their latest value), and the membership transitions of the last while, recorded by
-- triggers on `members` so that every writer — instances, their peers' expiry sweeps, Eureka
-- clients registered through the dashboard — is covered without any of them knowing.
create unlogged table instance_stats (
  instance_id text primary key,
  epoch       bigint not null,
  reported_at timestamptz not null default now(),
  stats       jsonb not null
);

create unlogged table member_events (
  id          bigint generated always as identity primary key,
  at          timestamptz not null default now(),
  instance_id text not null,
  epoch       bigint not null,
  -- joined (a new epoch), rejoined (a new epoch over a row not yet declared down), draining,
  -- up (back from draining), down (reason: expired, left, …)
  kind        text not null,
  status      text not null,
  reason      text,
  eureka      boolean not null default false
);

-- Keeps the last 1000 transitions; heartbeats touch neither status nor epoch, so they never fire it.
create function record_member_event() returns trigger
language plpgsql set search_path from current as $$
declare
  v_kind text;
  v_id bigint;
begin
  if tg_op = 'INSERT' then
    v_kind := case when new.status = 'down' then 'down' else 'joined' end;
  elsif new.epoch is distinct from old.epoch then
    v_kind := case when old.status = 'down' then 'joined' else 'rejoined' end;
  elsif new.status = 'down' then
    v_kind := 'down';
  elsif new.status = 'draining' then
    v_kind := 'draining';
  else
    v_kind := 'up';
  end if;
  insert into member_events (instance_id, epoch, kind, status, reason, eureka)
    values (new.instance_id, new.epoch, v_kind, new.status,
            case when new.status = 'down' then new.down_reason end, new.metadata ? 'eureka')
    returning id into v_id;
  delete from member_events where id <= v_id - 1000;
  return null;
end
$$;

create trigger members_joined after insert on members
  for each row execute function record_member_event();

create trigger members_changed after update of status, epoch on members
  for each row when (old.status is distinct from new.status or old.epoch is distinct from new.epoch)
  execute function record_member_event();
