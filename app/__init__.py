"""The inference service: serves a SavedModel from the model repository over HTTP.

Kept empty so that `python -m app.healthcheck` imports nothing heavy.
"""
