-- Shared configuration. Every version the cluster accepted is kept whole: `values` holds each source
-- (`application`, `application-{profile}`, `{app}`, `{app}-{profile}`, `runtime`) as a flat object
-- of dotted keys, secret leaves replaced by `{"$secret": "<AES-256-GCM ciphertext>"}`. A version is
-- never updated; a rollback writes a new version equal to an old one.
create table config_versions (
  version    bigint primary key,
  "values"   jsonb not null,
  changed    text[] not null,
  author     text not null,
  source     text not null,
  created_at timestamptz not null default now()
);

-- The schemas instances validate with (as JSON Schema) and the keys they hold secret, per app and
-- profiles, so every writer — an instance of another app, the CLI — refuses a version any of them
-- would refuse.
create table config_schemas (
  app         text not null,
  profiles    text not null,
  json_schema jsonb,
  secret_keys text[] not null default '{}',
  instance_id text not null,
  updated_at  timestamptz not null default now(),
  primary key (app, profiles)
);

-- Which version each instance runs (the dashboard's "running" column); only worth its latest value.
create unlogged table config_instances (
  instance_id text primary key,
  epoch       bigint not null,
  app         text not null,
  profiles    text not null,
  version     bigint not null,
  refused     bigint,
  applied_at  timestamptz not null default now()
);
