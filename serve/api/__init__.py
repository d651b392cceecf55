"""The HTTP surface of the service: routes, schemas, the error table, request hardening, inputs.

Nothing is imported here, so the engine's modules (batcher, decode pool, backend) can take their
error classes from `serve.api.errors` without pulling in the routes.
"""
