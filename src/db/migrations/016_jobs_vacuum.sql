-- Jobs churn: every job is inserted, claimed, completed and later swept, so the table and its
-- partial indexes gather dead tuples fast (a 20,000-job burst leaves tens of thousands). The
-- defaults wait for 20% of the table to be dead before vacuuming, and until then every claim
-- steps over the dead entries of jobs_queued and jobs_running. Vacuum and analyze the jobs table
-- after a fixed, small number of changes instead, without the cost-based sleep.
alter table jobs set (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 5000,
  autovacuum_analyze_scale_factor = 0,
  autovacuum_analyze_threshold = 5000,
  autovacuum_vacuum_cost_delay = 0
);
