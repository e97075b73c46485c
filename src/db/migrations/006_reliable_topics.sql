-- Reliable topics: durable, ordered logs. `reliable_topics.head` is the last offset given out. A
-- publish bumps it and inserts the message in one transaction, so the head row's lock hands out
-- dense offsets in commit order: a reader that sees offset n+1 also sees offset n.
create table reliable_topics (
  topic      text primary key,
  head       bigint not null default 0,
  -- Retention, written by every publish (the publisher's options): null means unbounded.
  max_age_ms bigint,
  max_count  bigint,
  created_at timestamptz not null default now()
);

create table reliable_topic_messages (
  topic        text not null,
  msg_offset   bigint not null,
  data         text not null,
  publisher    text not null,
  published_at timestamptz not null default now(),
  primary key (topic, msg_offset)
);

create index reliable_topic_messages_age on reliable_topic_messages (topic, published_at);

-- Consumer groups: the last handled offset, and the lease of the one consumer allowed to handle
-- messages (instance, membership epoch, and a token naming the subscription). A lease whose holder
-- is not a live member under that epoch may be taken over.
create table reliable_topic_groups (
  topic        text not null,
  grp          text not null,
  committed    bigint not null,
  holder       text,
  holder_epoch bigint,
  holder_token text,
  leased_at    timestamptz,
  committed_at timestamptz,
  primary key (topic, grp)
);
