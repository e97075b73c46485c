-- Membership: one row per instance id. Unlogged: liveness is ephemeral, and a database crash that
-- empties the table makes every instance notice (its heartbeat finds no row) and rejoin.
create sequence member_epochs;

create unlogged table members (
  instance_id   text primary key,
  epoch         bigint not null,
  status        text not null check (status in ('up', 'draining', 'down')),
  advertise_url text,
  roles         text[] not null default '{}',
  metadata      jsonb not null default '{}',
  pid           int,
  host          text,
  fail_after_ms int not null,
  started_at    timestamptz not null default now(),
  heartbeat_at  timestamptz not null default now(),
  expires_at    timestamptz not null,
  down_at       timestamptz,
  down_reason   text
);

create index members_live on members (expires_at) where status <> 'down';
