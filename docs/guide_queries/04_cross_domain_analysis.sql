-- Cross-Domain Analysis (verbatim from the Metrics Layer Guide)
WITH metrics AS (
    SELECT 
        entity_id as customer_id,
        MAX(CASE WHEN metric_name = 'customer_health_score' THEN metric_value END) as health_score,
        MAX(CASE WHEN metric_name = 'monthly_active_users' THEN metric_value END) as mau,
        MAX(CASE WHEN metric_name = 'current_mrr' THEN metric_value END) as mrr
    FROM metrics_unified_domains
    WHERE domain = 'customer_success'
      AND metric_date = CURRENT_DATE
    GROUP BY entity_id
)
SELECT 
    CASE 
        WHEN health_score >= 80 THEN 'Healthy'
        WHEN health_score >= 60 THEN 'Stable'
        ELSE 'At Risk'
    END as health_category,
    COUNT(*) as customer_count,
    SUM(mrr) as total_mrr,
    AVG(mau) as avg_mau
FROM metrics
GROUP BY health_category;
