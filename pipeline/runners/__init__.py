"""One thin runner per orchestrator: each chooses orchestration, paths and Beam arguments only.

The graph is always `pipeline.pipeline.create_pipeline`. `local` runs it with LocalDagRunner and
the Beam DirectRunner (development, tests, `make demo`).
"""
