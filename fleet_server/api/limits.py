"""A size limit for every request body except the bundle and sample uploads (which stream to
disk and have their own limits)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: JSON bodies of this API are small (a device, an assignment of up to 10,000 ids).
MAX_JSON_BODY = 1024 * 1024
#: Streaming uploads with their own limits: bundles (``max_bundle_bytes``) and captured samples
#: (``max_sample_bytes``).
UPLOAD_PATHS = ("/api/v1/models", "/api/v1/samples")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_JSON_BODY) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] == "POST" and scope["path"].rstrip("/") in UPLOAD_PATHS
        ):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await _refuse(send, self.max_bytes)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI turns any other exception raised while it reads a body into
                    # "400 There was an error parsing the body" (a chunked 2 MB body to
                    # POST /devices got that); an HTTPException passes through as the 413.
                    raise HTTPException(
                        413, detail=f"request body is larger than {self.max_bytes} bytes"
                    )
            return message

        await self.app(scope, limited, send)


async def _refuse(send: Send, max_bytes: int) -> None:
    body = json.dumps({"detail": f"request body is larger than {max_bytes} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
