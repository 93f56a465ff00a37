-- Basic Query (Single Metric) (verbatim from the Metrics Layer Guide)
SELECT 
    metric_date,
    customer_name,
    customer_health_score
FROM metrics_customer_success
WHERE metric_date = CURRENT_DATE
ORDER BY customer_health_score ASC
LIMIT 10;
