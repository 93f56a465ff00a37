-- Check history for readers (a Superset chart): every check result, newest first by id.
create or replace view entity.metrics_check_results as
select
    result_id,
    checked_at,
    run_id,
    dag_id,
    domain,
    metric_date,
    check_kind,
    check_name,
    target,
    metric,
    entity,
    severity,
    success,
    observed,
    expected
from metrics_ops.check_results;
