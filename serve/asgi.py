"""The base of the app's pure ASGI middlewares (body limit, error envelope, metrics).

Pure ASGI rather than Starlette's BaseHTTPMiddleware: a streamed request body and an exception
after the response started stay visible to the middleware.
"""

from __future__ import annotations


class HTTPMiddleware:
    """Acts on HTTP requests only (`handle`); lifespan and websocket messages pass straight through."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        raise NotImplementedError
