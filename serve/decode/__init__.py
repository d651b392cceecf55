"""Bounded video decoding: the worker pool (`pool`) and the worker's own loop (`child`).

Nothing is imported here: the forkserver preloads `serve.decode.child`, which must stay free of
torch and the service.
"""
