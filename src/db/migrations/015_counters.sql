-- Hot counters: one row per (counter, key, shard), where the shard is the instance that wrote it.
-- Instances never update each other's rows, so many writers on one key never wait on one row lock;
-- a read sums the shards. Logged: an acknowledged increment survives a crash and a failover.
create table counter_shards (
  counter    text not null,
  key        text not null,
  shard      text not null,
  value      bigint not null default 0,
  updated_at timestamptz not null default now(),
  primary key (counter, key, shard)
);
