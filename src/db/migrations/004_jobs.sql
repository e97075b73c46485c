-- Jobs, cron and singletons. Jobs are durable (logged). A claim records the claimer's instance id
-- and epoch plus a claim id unique across all claims, so a claim whose epoch is no longer live can
-- be handed back at once, and a late completion of a lost claim matches nothing.
create sequence job_claims;

create table jobs (
  id            bigint generated always as identity primary key,
  name          text not null,
  payload       jsonb not null default 'null',
  state         text not null default 'queued'
                check (state in ('queued', 'running', 'completed', 'failed', 'cancelled')),
  priority      int not null default 0,
  run_at        timestamptz not null default now(),
  key           text,
  attempts      int not null default 0,
  claim_id      bigint,
  claimed_by    text,
  claimed_epoch bigint,
  claimed_at    timestamptz,
  last_error    text,
  created_at    timestamptz not null default now(),
  finished_at   timestamptz
);

-- Dedupe keys: one job per (name, key) for as long as the job is kept.
create unique index jobs_key on jobs (name, key) where key is not null;
-- What claimJobs scans: due jobs of one name, highest priority first, then oldest.
create index jobs_queued on jobs (name, priority desc, run_at, id) where state = 'queued';
-- What requeueing a dead claimer's jobs scans.
create index jobs_running on jobs (claimed_by, claimed_epoch) where state = 'running';
-- What the sweeper deletes once they are older than the retention.
create index jobs_finished on jobs (finished_at) where state in ('completed', 'cancelled');

-- Cron: one row per schedule; `last_tick` is the latest tick claimed, so each tick is claimed once.
create table cron_schedules (
  name            text primary key,
  spec            text not null,
  timezone        text,
  last_tick       timestamptz,
  last_job_id     bigint,
  last_claimed_by text,
  updated_at      timestamptz not null default now()
);

-- Singletons: one lease per name. The lease is valid while its holder's epoch is live in
-- `members`; `fence` grows with every change of holder.
create table singleton_leases (
  name         text primary key,
  holder       text,
  holder_epoch bigint,
  fence        bigint not null default 0,
  acquired_at  timestamptz,
  released_at  timestamptz
);
