"""The gate's direct routes (``security.Gate``): answered without the app, handed to the app with the body
replayed when the route declines, refused before the route when the token, the type or the size is wrong."""

from __future__ import annotations

import asyncio
from typing import Any

from vidsearch.serve.security import DIRECT_MAX_BODY, DirectReply, Gate


def _call(gate: Gate, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, list[dict[str, Any]]]:
    """Send one POST through ``gate`` (the body in two chunks); (status, body, the messages sent)."""
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": "POST", "path": path, "headers": raw, "query_string": b""}
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(gate(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"), sent


def _gate(route: Any, token: str | None = None) -> tuple[Gate, list[Any], list[bytes]]:
    observed: list[Any] = []
    app_bodies: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # echoes the body it reads
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        app_bodies.append(body)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"app:" + body})

    gate = Gate(app, token=token, max_body=1 << 20, observe=lambda scope, status, s, kind: observed.append((status, kind)),
                direct={("POST", "/search"): route})
    return gate, observed, app_bodies


FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_a_direct_route_answers_without_the_app() -> None:
    seen: list[tuple[str | None, bytes]] = []

    async def route(scope: dict[str, Any], content_type: str | None, body: bytes) -> DirectReply:
        seen.append((content_type, body))
        return DirectReply(200, b'{"ok":1}')

    gate, observed, app_bodies = _gate(route)
    body = b"ref=abc%40" + b"1-2" * 10
    status, answer, sent = _call(gate, "/search", body, {**FORM, "content-length": str(len(body))})
    assert (status, answer) == (200, b'{"ok":1}')
    assert seen == [("application/x-www-form-urlencoded", body)], "the route gets the whole body, both chunks"
    assert app_bodies == [] and observed == [(200, None)]
    headers = dict(sent[0]["headers"])
    assert headers[b"content-type"] == b"application/json" and headers[b"content-length"] == b"8"


def test_a_declining_route_hands_the_app_the_same_body() -> None:
    async def route(scope: dict[str, Any], content_type: str | None, body: bytes) -> None:
        return None

    gate, observed, app_bodies = _gate(route)
    body = b"x" * 1000
    status, answer, _ = _call(gate, "/search", body, {**FORM, "content-length": "1000"})
    assert (status, answer) == (201, b"app:" + body) and app_bodies == [body]


def test_large_or_unsized_bodies_and_other_paths_go_to_the_app() -> None:
    calls: list[bytes] = []

    async def route(scope: dict[str, Any], content_type: str | None, body: bytes) -> DirectReply:
        calls.append(body)
        return DirectReply(200, b"{}")

    gate, _, app_bodies = _gate(route)
    big = b"y" * (DIRECT_MAX_BODY + 1)
    assert _call(gate, "/search", big, {**FORM, "content-length": str(len(big))})[0] == 201  # an upload's size
    assert _call(gate, "/search", b"ref=a", FORM)[0] == 201  # chunked: no Content-Length
    assert _call(gate, "/videos", b"{}", {"content-type": "application/json", "content-length": "2"})[0] == 201
    assert calls == [] and len(app_bodies) == 3


def test_token_and_type_are_checked_before_a_direct_route() -> None:
    async def route(scope: dict[str, Any], content_type: str | None, body: bytes) -> DirectReply:
        raise AssertionError("the route must not run")

    gate, observed, _ = _gate(route, token="t0ken")
    assert _call(gate, "/search", b"ref=a", {**FORM, "content-length": "5"})[0] == 401
    status, answer, _ = _call(gate, "/search", b"ref=a", {"content-type": "text/plain", "content-length": "5",
                                                            "authorization": "Bearer t0ken"})
    assert status == 415 and b"UnsupportedMediaType" in answer
    assert [kind for _, kind in observed] == ["Unauthorized", "UnsupportedMediaType"]


def test_a_direct_route_error_reply_is_counted_with_its_type() -> None:
    async def route(scope: dict[str, Any], content_type: str | None, body: bytes) -> DirectReply:
        return DirectReply(503, b'{"error":{}}', ((b"retry-after", b"1"),), error_type="OverloadedError")

    gate, observed, _ = _gate(route)
    status, _, sent = _call(gate, "/search", b"ref=a", {**FORM, "content-length": "5"})
    assert status == 503 and (b"retry-after", b"1") in sent[0]["headers"]
    assert observed == [(503, "OverloadedError")]
