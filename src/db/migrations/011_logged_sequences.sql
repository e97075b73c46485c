-- PostgreSQL 15 makes the sequence of an unlogged table unlogged too, and a standby that replayed its
-- creation cannot use it once promoted ("bad magic number in sequence"): after a failover, rejoining
-- (member_events) and large bus payloads failed for good. Logged sequences survive a promotion; the
-- unlogged tables they number are emptied by it anyway. Every such sequence of this schema, so a
-- later unlogged table is covered by the same statement when this migration's pattern is reused.
do $$
declare
  r record;
begin
  if current_setting('server_version_num')::int < 150000 then
    return;
  end if;
  for r in
    select s.oid::regclass as seq
    from pg_class s
    join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = s.oid and d.refclassid = 'pg_class'::regclass
    join pg_class t on t.oid = d.refobjid
    where s.relkind = 'S' and s.relpersistence = 'u' and t.relpersistence = 'u'
      and t.relnamespace = current_schema()::regnamespace
  loop
    execute format('alter sequence %s set logged', r.seq);
  end loop;
end
$$;
