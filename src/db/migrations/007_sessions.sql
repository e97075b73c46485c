-- Sessions of web frameworks (express-session, @fastify/session). `data` is the JSON object of the
-- session's keys without its cookie; `version` grows with every write, so a writer that loaded an
-- older version merges the keys it changed onto the current row instead of overwriting it.
create table sessions (
  store      text not null,
  sid        text not null,
  data       text not null,
  cookie     text,
  version    bigint not null default 1,
  expires_at timestamptz not null,
  updated_at timestamptz not null default now(),
  primary key (store, sid)
);

create index sessions_expiry on sessions (expires_at);
