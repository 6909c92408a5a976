"""The production loop, above the pipeline definition and its runners: statistics of the
serving request log, skew against training and drift between windows (monitor), the
retraining trigger (starts a run through pipeline/runners), the canary decision and its
traffic, and the catalogue refresh of a served version."""
