-- Bus payloads too large for one NOTIFY travel by reference: the row is written in the same
-- transaction as the notification that names it, and swept after the retention period.
create unlogged table bus_payloads (
  id         bigserial primary key,
  data       bytea not null,
  created_at timestamptz not null default now()
);

create index bus_payloads_created on bus_payloads (created_at);
