-- Realtime messages: one cluster-wide, dense, commit-ordered id sequence (a single head row locked
-- by each publishing transaction), a retained log per destination for resume, the highest id swept
-- per destination (so a resume can tell "nothing new" from "swept"), and presence per instance.
create table realtime_head (
  id   int primary key default 1 check (id = 1),
  last bigint not null
);
insert into realtime_head (id, last) values (1, 0);

create table realtime_log (
  id          bigint primary key,
  destination text not null,
  user_name   text not null default '',
  headers     jsonb not null default '{}',
  body        text not null,
  created_at  timestamptz not null default now()
);
create index realtime_log_destination on realtime_log (destination, user_name, id);
create index realtime_log_created on realtime_log (created_at);

create table realtime_swept (
  destination text not null,
  user_name   text not null default '',
  upto        bigint not null,
  primary key (destination, user_name)
);

create unlogged table realtime_presence (
  instance_id text not null,
  epoch       bigint not null,
  user_name   text not null,
  sessions    int not null,
  primary key (instance_id, user_name)
);
