-- Shared maps: durable key-value entries with a version per entry (for compare-and-set) and an
-- optional expiry on database time. Values are stored as encoded text (JSON by default).
create table map_entries (
  map        text not null,
  key        text not null,
  value      text not null,
  version    bigint not null default 1,
  expires_at timestamptz,
  updated_at timestamptz not null default now(),
  primary key (map, key)
);

create index map_entries_expiry on map_entries (expires_at) where expires_at is not null;
