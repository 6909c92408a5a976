"""Monitoring: statistics of the serving request log, skew against training and drift
between windows with the schema's comparators, and the retraining trigger."""
