"""After promotion: production's serving metrics from Prometheus, judged against the SLOs and the previous version,
alerting rules generated from the same queries, and rollback on evidence."""
