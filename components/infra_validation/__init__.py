"""Infra validation: the candidate SavedModel served by a fresh model-server process before
the Pusher may publish it (see component.py for the pipeline step, probe.py for the checks).
"""
