"""A corpus of malformed requests: each gets its exact 4xx and the JSON error shape; none gets a 5xx, and
neither does deleting a video while it is being searched. The last test reads the server's own metrics:
no 5xx over everything these tests (and the others on the same server) sent."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[httpx.Client, dict[str, Any]], httpx.Response]
    status: int
    kind: str | None


def raw(ctx: dict[str, Any], request: bytes) -> httpx.Response:
    """Send ``request`` as is over a socket; parse the status, headers and body of the answer."""
    url = urlsplit(ctx["url"])
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)  # the body ends here, whatever Content-Length said
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return httpx.Response(status, headers=headers, content=body)


def multipart(ctx: dict[str, Any], body: bytes, boundary: str = "BOUNDARY", length: int | None = None,
              path: str = "/search") -> httpx.Response:
    content_type = f"multipart/form-data; boundary={boundary}" if boundary else "multipart/form-data"
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ctx['token']}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\nConnection: close\r\n\r\n").encode()
    return raw(ctx, head + body)


PART = (b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.mp4\"\r\n"
        b"Content-Type: video/mp4\r\n\r\n")


def search(**data: Any) -> Callable[[httpx.Client, dict[str, Any]], httpx.Response]:
    return lambda c, ctx: c.post("/search", data={k: (v(ctx) if callable(v) else v) for k, v in data.items()})


def upload(name: str, content: Callable[[dict[str, Any]], bytes], path: str = "/search",
           **data: Any) -> Callable[[httpx.Client, dict[str, Any]], httpx.Response]:
    return lambda c, ctx: c.post(path, files={"file": (name, content(ctx))}, data=data)


CASES = [
    # /search: the body
    Case("no file and no ref", search(k="3"), 400, "BadRequest"),
    Case("both file and ref", lambda c, ctx: c.post("/search", files={"file": ("q.mp4", ctx["clip"])},
                                                   data={"ref": f"{ctx['vid']}@1-3"}), 400, "BadRequest"),
    Case("json body", lambda c, ctx: c.post("/search", json={"ref": "x"}), 415, "UnsupportedMediaType"),
    Case("text/plain body", lambda c, ctx: c.post("/search", content=b"ref=x", headers={"Content-Type": "text/plain"}),
         415, "UnsupportedMediaType"),
    Case("no content type", lambda c, ctx: c.post("/search", content=b"abc"), 415, "UnsupportedMediaType"),
    Case("truncated multipart", lambda c, ctx: multipart(ctx, PART + ctx["clip"][:5000]), 400, "BadRequest"),
    Case("multipart without boundary", lambda c, ctx: multipart(ctx, PART + b"x\r\n--BOUNDARY--\r\n", boundary=""),
         400, "BadRequest"),
    Case("multipart with another boundary",
         lambda c, ctx: multipart(ctx, PART + ctx["clip"] + b"\r\n--BOUNDARY--\r\n", boundary="OTHER"), 400, "BadRequest"),
    Case("file field sent as text", lambda c, ctx: c.post("/search", files={"k": (None, "3")}, data={"file": "abc"}),
         400, "BadRequest"),
    Case("oversize upload", upload("big.mp4", lambda ctx: b"\0" * (2 * 1024 * 1024 + 1)), 413, "PayloadTooLarge"),
    Case("non-media bytes", upload("clip.mp4", lambda ctx: b"GIF89a? no, just text\n" * 100), 422, "DecodeError"),
    Case("empty file", upload("empty.mp4", lambda ctx: b""), 422, "DecodeError"),
    Case("truncated video", upload("cut.mp4", lambda ctx: ctx["bikes"][:20000]), 422, "DecodeError"),
    Case("text named .png", upload("photo.png", lambda ctx: b"hello " * 1000), 422, "DecodeError"),
    Case("html named .jpg", upload("x.jpg", lambda ctx: b"<html><body>hi</body></html>"), 422, "DecodeError"),
    # /search: the fields
    Case("k = 0", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k="0"), 400, "QueryError"),
    Case("k < 0", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k="-5"), 400, "QueryError"),
    Case("k = 10^9", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k=str(10**9)), 400, "QueryError"),
    Case("k = 10^30 (past int64)", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k="1" + "0" * 30), 400, None),
    Case("k not a number", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k="ten"), 400, "BadRequest"),
    Case("k fractional", search(ref=lambda ctx: f"{ctx['vid']}@1-3", k="1.5"), 400, "BadRequest"),
    Case("k = 0 with a file", upload("q.mp4", lambda ctx: ctx["clip"], k="0"), 400, "QueryError"),
    Case("unknown rerank", search(ref=lambda ctx: f"{ctx['vid']}@1-3", rerank="magic"), 400, "QueryError"),
    Case("min_similarity > 1", search(ref=lambda ctx: f"{ctx['vid']}@1-3", min_similarity="2"), 400, "QueryError"),
    Case("min_similarity nan", search(ref=lambda ctx: f"{ctx['vid']}@1-3", min_similarity="nan"), 400, "QueryError"),
    Case("crops not a boolean", search(ref=lambda ctx: f"{ctx['vid']}@1-3", crops="maybe"), 400, "BadRequest"),
    # /search: bad refs
    Case("ref nonsense", search(ref="nonsense"), 400, "QueryError"),
    Case("ref end before start", search(ref=lambda ctx: f"{ctx['vid']}@5-2"), 400, "QueryError"),
    Case("ref empty range", search(ref=lambda ctx: f"{ctx['vid']}@3-3"), 400, "QueryError"),
    Case("ref unknown video", search(ref="0123456789ab@1-2"), 404, "NotFoundError"),
    Case("ref past the video's end", search(ref=lambda ctx: f"{ctx['vid']}@500-600"), 400, "QueryError"),
    Case("ref with SQL", search(ref=lambda ctx: f"{ctx['vid']}@1-2'; DROP TABLE videos; --"), 400, "QueryError"),
    Case("ref 10,000 characters", search(ref="a" * 10_000 + "@1-2"), 400, "QueryError"),
    Case("ref unicode", search(ref="视频@1-2"), 400, "QueryError"),
    Case("ref negative times", search(ref=lambda ctx: f"{ctx['vid']}@-3-2"), 400, "QueryError"),
    Case("ref path traversal", search(ref="../../etc/passwd"), 400, "QueryError"),
    # videos and jobs
    Case("unknown video", lambda c, ctx: c.get("/videos/ffffffffffff"), 404, "NotFoundError"),
    Case("video id with traversal", lambda c, ctx: c.get("/videos/..%2F..%2Fetc%2Fpasswd"), 404, None),
    Case("delete unknown video", lambda c, ctx: c.delete("/videos/ffffffffffff"), 404, "NotFoundError"),
    Case("unknown job", lambda c, ctx: c.get("/jobs/nope"), 404, "NotFoundError"),
    Case("limit 0", lambda c, ctx: c.get("/videos", params={"limit": 0}), 400, "BadRequest"),
    Case("limit 10^9", lambda c, ctx: c.get("/videos", params={"limit": 10**9}), 400, "BadRequest"),
    Case("negative offset", lambda c, ctx: c.get("/videos", params={"offset": -1}), 400, "BadRequest"),
    Case("thumbnail t < 0", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/thumbnail", params={"t": -1}), 400, "BadRequest"),
    Case("thumbnail t not a number", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/thumbnail", params={"t": "x"}),
         400, "BadRequest"),
    Case("thumbnail t infinite", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/thumbnail", params={"t": "inf"}),
         400, None),
    Case("thumbnail width huge", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/thumbnail", params={"width": 10**6}),
         400, "BadRequest"),
    Case("thumbnail of unknown video", lambda c, ctx: c.get("/videos/ffffffffffff/thumbnail"), 404, "NotFoundError"),
    Case("malformed Range", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/media", headers={"Range": "bytes=x-y"}),
         400, "BadRequest"),
    Case("Range start after end", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/media", headers={"Range": "bytes=9-2"}),
         400, "BadRequest"),
    Case("Range past the end", lambda c, ctx: c.get(f"/videos/{ctx['vid']}/media",
                                                    headers={"Range": "bytes=999999999-"}), 416, "RangeNotSatisfiable"),
    # POST /videos
    Case("index: invalid json", lambda c, ctx: c.post("/videos", content=b"{paths:", headers={
        "Content-Type": "application/json"}), 400, "BadRequest"),
    Case("index: paths not a list", lambda c, ctx: c.post("/videos", json={"paths": "/tmp"}), 400, "BadRequest"),
    Case("index: empty paths", lambda c, ctx: c.post("/videos", json={"paths": []}), 400, "BadRequest"),
    Case("index: paths of numbers", lambda c, ctx: c.post("/videos", json={"paths": [1, 2]}), 400, "BadRequest"),
    Case("index: json array", lambda c, ctx: c.post("/videos", json=["a"]), 400, "BadRequest"),
    Case("index: path traversal", lambda c, ctx: c.post("/videos", json={"paths": ["../../etc/passwd"]}), 403,
         "Forbidden"),
    Case("index: absolute path elsewhere", lambda c, ctx: c.post("/videos", json={"paths": ["/etc"]}), 403, "Forbidden"),
    Case("index: symlink out of the root", lambda c, ctx: c.post("/videos", json={
        "paths": [str(ctx["roots"]["allowed"] / "link-out.m4v")]}), 403, "Forbidden"),
    Case("index: NUL in a path", lambda c, ctx: c.post("/videos", json={"paths": ["a\x00b"]}), 400, "BadRequest"),
    Case("index: non-media upload", upload("x.mp4", lambda ctx: b"not a video" * 50, path="/videos"), 422,
         "DecodeError"),
    Case("index: multipart without a file", lambda c, ctx: c.post("/videos", files={"other": ("a.mp4", b"x")}),
         400, "BadRequest"),
    Case("index: text/plain body", lambda c, ctx: c.post("/videos", content=b"/tmp", headers={
        "Content-Type": "text/plain"}), 415, "UnsupportedMediaType"),
    Case("index: oversize upload", upload("big.mp4", lambda ctx: b"\0" * (3 * 1024 * 1024), path="/videos"), 413,
         "PayloadTooLarge"),
    # auth and routing
    Case("missing token", lambda c, ctx: c.get("/videos", headers={"Authorization": ""}), 401, "Unauthorized"),
    Case("wrong token", lambda c, ctx: c.get("/videos", headers={"Authorization": "Bearer nope"}), 401, "Unauthorized"),
    Case("empty bearer", lambda c, ctx: c.post("/search", headers={"Authorization": "Bearer"}), 401, "Unauthorized"),
    Case("token in the query of /search", lambda c, ctx: c.post(f"/search?token={ctx['token']}", headers={
        "Authorization": ""}, data={"ref": "x"}), 401, "Unauthorized"),
    Case("unknown route", lambda c, ctx: c.get("/nothing/here"), 404, "NotFound"),
    Case("wrong method", lambda c, ctx: c.put("/search"), 405, "MethodNotAllowed"),
]


@pytest.fixture(scope="module")
def ctx(api_server, query_clip, footage, roots) -> dict[str, Any]:
    with api_server.client() as client:
        videos = client.get("/videos").json()["videos"]
    return {"url": api_server.url, "token": api_server.token, "clip": query_clip.read_bytes(),
            "bikes": footage["bikes.mp4"].read_bytes(), "roots": roots,
            "vid": next(v["video_id"] for v in videos if v["name"] == "bikes.mp4")}


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request(api, ctx, assert_error, case):
    assert_error(case.send(api, ctx), case.status, case.kind)


def test_unicode_names_work(api, ctx):
    for name in ("клип 视频 🎬.mp4", "café\u0301 (1).mp4", "名前.MP4", "a" * 300 + ".mp4"):
        r = api.post("/search", files={"file": (name, ctx["clip"])}, data={"k": "1"})
        assert r.status_code == 200, (name, r.text)
        assert r.json()["query"] == name and r.json()["results"][0]["video_id"] == ctx["vid"]


def test_deleting_a_video_while_it_is_searched(api, api_server, footage, wait_job):
    """Searches for a video (by stored range and by upload) run while it is deleted: each answers 200 (found,
    or no longer found) or 404 (its range is gone), never 5xx; after the delete it is not found."""
    with open(footage["v1.m4v"], "rb") as f:
        data = f.read()
    job = wait_job(api, api.post("/videos", files={"file": ("victim.m4v", data[:-1] + b"\0")}).json()["job_id"])
    assert job["status"] == "done" and job["files"][0]["status"] == "indexed", job
    victim = job["files"][0]["video_id"]
    statuses: list[int] = []
    stop = threading.Event()

    def hammer(kind: str) -> None:
        with api_server.client() as client:
            while not stop.is_set():
                if kind == "ref":
                    r = client.post("/search", data={"ref": f"{victim}@0-3", "k": "2"})
                else:
                    r = client.post("/search", files={"file": ("v1.m4v", data)}, data={"k": "2"})
                statuses.append(r.status_code)

    threads = [threading.Thread(target=hammer, args=(k,)) for k in ("ref", "ref", "upload")]
    for t in threads:
        t.start()
    while len(statuses) < 10:
        threading.Event().wait(0.02)
    assert api.delete(f"/videos/{victim}").json() == {"removed": victim}
    seen = len(statuses)
    while len(statuses) < seen + 10:
        threading.Event().wait(0.02)
    stop.set()
    for t in threads:
        t.join(60)
    assert statuses and set(statuses) <= {200, 404}, sorted(set(statuses))
    assert 404 in statuses  # the ref searches ran on both sides of the delete
    r = api.post("/search", data={"ref": f"{victim}@0-3"})
    assert r.status_code == 404
    found = api.post("/search", files={"file": ("v1.m4v", data)}, data={"k": "10"}).json()
    assert victim not in [x["video_id"] for x in found["results"]]


def test_zero_5xx_over_everything_sent(api):
    """Last: the server's own request counter has no 5xx for any request of this session."""
    text = api.get("/metrics").text
    statuses = re.findall(r'vidsearch_http_requests_total{[^}]*status="(\d+)"} (\d+)', text)
    assert statuses and not [s for s, n in statuses if s.startswith("5") and float(n) > 0], statuses
    four = sum(float(n) for s, n in statuses if s.startswith("4"))
    assert four >= 30
