"""The HTTP API over real footage and the real encoder: search (upload, image, stored range) returns what
the CLI returns, thumbnails show the right frame, media ranges are the file's bytes, jobs index real
files that then become searchable, metrics fill, the docs page needs no CDN; and the batched query
path encodes and searches exactly like the one-query path."""

from __future__ import annotations

import hashlib

import io
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest


# ------------------------------------------------------------------------------------------ read-only
def test_health_and_video_list_match_the_collection(live_server, assert_error, wait_job):
    from vidsearch import Collection

    with Collection.open(live_server.collection) as coll:
        info, videos = coll.info(), coll.videos()
    with live_server.client() as client:
        health = client.get("/health").json()
        assert health == {"status": "ok", "videos": info["videos"], "segments": info["segments"],
                          "generation": info["generation"]}
        listed = client.get("/videos").json()
        assert listed["total"] == len(videos) == 5
        assert [v["video_id"] for v in listed["videos"]] == [v["id"] for v in videos]
        first = listed["videos"][0]
        assert {"video_id", "path", "name", "duration", "segments", "frames"} <= set(first)
        assert first["name"] == Path(first["path"]).name and first["segments"] == videos[0]["segments"]
        page = client.get("/videos", params={"offset": 1, "limit": 2}).json()
        assert page["total"] == 5 and [v["video_id"] for v in page["videos"]] == [v["id"] for v in videos[1:3]]
        assert client.get(f"/videos/{first['video_id'][:6]}").json() == first  # a unique prefix
        assert_error(client.get("/videos/0000000000ff"), 404, "NotFoundError")


def test_search_upload_finds_the_source_first_with_the_cli_shape(live_server, query_clip, footage):
    from vidsearch.search.engine import Engine

    with live_server.client() as client, open(query_clip, "rb") as f:
        r = client.post("/search", files={"file": ("bikes clip.mp4", f, "video/mp4")}, data={"k": "3"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"query", "k", "results", "timings_ms"} and body["query"] == "bikes clip.mp4"
    assert set(body["timings_ms"]) == {"decode", "encode", "search", "total"}
    assert body["timings_ms"]["decode"] > 0 and body["timings_ms"]["encode"] > 0
    top = body["results"][0]
    assert Path(top["path"]) == footage["bikes.mp4"].resolve() and top["score"] > 0.85
    assert top["score"] > 2 * body["results"][1]["score"], body["results"]
    m = top["matches"][0]  # the clip is bikes' seconds 3-7
    assert m["query_start"] <= 1.0 and m["query_end"] >= 3.0, m
    assert abs(m["ref_start"] - 3.0) <= 1.0 and abs(m["ref_end"] - 7.0) <= 1.0, m
    # exactly what the engine (the CLI's path) answers for the same file
    with Engine.open(live_server.collection) as engine:
        expected = engine.search(query_clip, k=3).to_dict()
    assert [(x["video_id"], x["matches"]) for x in body["results"]] == \
        [(x["video_id"], x["matches"]) for x in expected["results"]]
    assert [x["score"] for x in body["results"]] == pytest.approx([x["score"] for x in expected["results"]], abs=1e-4)


def test_search_with_a_light_query_encoder_names_it_and_answers_as_the_engine(live_server, query_clip, footage,
                                                                             assert_error):
    """query_encoder=sscd-distilled: the upload is encoded by it (whole, in the decode pool) and the answer says so,
    as the CLI's; an encoder that cannot query the collection, or an unknown one, is the client's mistake."""
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    with live_server.client() as client:
        with open(query_clip, "rb") as f:
            r = client.post("/search", files={"file": ("clip.mp4", f, "video/mp4")},
                            data={"k": "3", "query_encoder": "sscd-distilled"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query_encoder"] == "sscd-distilled"
        assert Path(body["results"][0]["path"]) == footage["bikes.mp4"].resolve()
        with Engine.open(live_server.collection) as engine:
            expected = engine.search(query_clip, k=3, params=SearchParams(query_encoder="sscd-distilled")).to_dict()
        assert [x["video_id"] for x in body["results"]] == [x["video_id"] for x in expected["results"]]
        for name, kind in (("effnet-lite0", "QueryError"), ("clip", "QueryError")):
            with open(query_clip, "rb") as f:
                r = client.post("/search", files={"file": ("clip.mp4", f, "video/mp4")}, data={"query_encoder": name})
            assert_error(r, 400, kind)


def test_under_load_an_upload_is_refused_before_a_byte_of_its_body_is_read(live_server):
    """With the encoder's queue full, a multipart upload gets its 503 from its headers alone (neither the gate nor
    the route reads its body: at twice the sustainable image load half the uploads are refused, and reading them
    delayed the rest); a small multipart form (a stored range) is still read and answered; without the load, the
    same upload is read (here: refused as a malformed form)."""
    import asyncio

    with live_server.client() as client:
        bikes = next(v for v in client.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
    upload = b"x" * 30_000  # over the multipart size a stored range takes, under the gate's 64 KB for direct routes
    ref = (b'--xyz\r\nContent-Disposition: form-data; name="ref"\r\n\r\n' + f"{bikes['video_id']}@1-5".encode()
           + b"\r\n--xyz--\r\n")

    def call(body: bytes) -> tuple[int, int]:
        reads = [0]
        sent: list[dict] = []

        async def receive():
            reads[0] += 1
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/search", "raw_path": b"/search", "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"test"), (b"content-type", b"multipart/form-data; boundary=xyz"),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        asyncio.run(live_server.app(scope, receive, send))
        return next(m["status"] for m in sent if m["type"] == "http.response.start"), reads[0]

    encoder = live_server.app.state.server.queries.encoder
    status, reads = call(upload)
    assert status == 400 and reads >= 1  # read, and refused as the malformed form it is
    encoder.reserve(10_000)  # another query of 10,000 frames, admitted (alone) and being decoded
    try:
        assert call(upload) == (503, 0)
        status, reads = call(ref)
        assert status == 200 and reads >= 1
    finally:
        encoder.release(10_000)


def test_search_image_is_identified_by_content_not_name(live_server, footage, tmp_path):
    import av
    from PIL import Image

    with av.open(str(footage["bigbuckbunny.mp4"])) as c:
        frame = next(f for f in c.decode(video=0) if f.time >= 2.0).to_image()
    png = io.BytesIO()
    frame.save(png, format="PNG")
    with live_server.client() as client:  # a PNG named like a video: decoded as the image it is
        r = client.post("/search", files={"file": ("frame.mp4", png.getvalue(), "application/octet-stream")},
                        data={"k": "2"})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert Path(top["path"]) == footage["bigbuckbunny.mp4"].resolve()
    assert abs(top["matches"][0]["ref_start"] - 2.0) <= 1.5
    assert Image.open(png).format == "PNG"
    # the frame shown small inside a grey picture (picture-in-picture): found with crops
    host = Image.new("RGB", (frame.width * 2, frame.height * 2), (90, 90, 90))
    host.paste(frame, (0, 0))
    pip = io.BytesIO()
    host.save(pip, format="JPEG", quality=90)
    with live_server.client() as client:
        r = client.post("/search", files={"file": ("pip.jpg", pip.getvalue())}, data={"k": "2", "crops": "true"})
    assert r.status_code == 200, r.text
    assert Path(r.json()["results"][0]["path"]) == footage["bigbuckbunny.mp4"].resolve()


def test_search_stored_range(live_server, assert_error, wait_job):
    with live_server.client() as client:
        videos = client.get("/videos").json()["videos"]
        bikes = next(v for v in videos if v["name"] == "bikes.mp4")
        r = client.post("/search", data={"ref": f"{bikes['video_id']}@2-6", "k": "2", "rerank": "exact"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == f"{bikes['video_id']}@2-6" and body["k"] == 2 and len(body["results"]) == 2
        top = body["results"][0]
        assert top["video_id"] == bikes["video_id"] and top["score"] > 0.99
        assert abs(top["matches"][0]["ref_start"] - 2.0) <= 1.0


def test_stored_range_form_and_multipart_answer_alike_through_the_gate(live_server):
    # both bodies are small: the gate answers them itself (security.Gate's direct route), as the route would
    def count(text: str, status: str) -> float:
        m = re.search(rf'vidsearch_http_requests_total{{endpoint="/search",method="POST",status="{status}"}} (\S+)', text)
        return float(m.group(1)) if m else 0.0

    with live_server.client() as client:
        bikes = next(v for v in client.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
        ref = f"{bikes['video_id']}@1-5"
        before = client.get("/metrics").text
        form = client.post("/search", data={"ref": ref, "k": "3"})
        multi = client.post("/search", files={"ref": (None, ref), "k": (None, "3")})
        bad = client.post("/search", files={"ref": (None, "nonsense"), "k": (None, "3")})
        after = client.get("/metrics").text
    assert form.status_code == multi.status_code == 200, (form.text, multi.text)
    assert form.headers["content-type"] == multi.headers["content-type"] == "application/json"
    strip = [{**r.json(), "timings_ms": None} for r in (form, multi)]
    assert strip[0] == strip[1] and strip[0]["query"] == ref and len(strip[0]["results"]) == 3
    assert set(form.json()["timings_ms"]) == {"decode", "encode", "search", "total"}
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "QueryError"
    assert count(after, "200") - count(before, "200") == 2 and count(after, "400") - count(before, "400") == 1


def test_thumbnail_is_a_jpeg_of_the_frame_nearest_t(live_server, footage):
    from PIL import Image

    from vidsearch.decode import iter_frames

    with live_server.client() as client:
        bikes = next(v for v in client.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
        thumbs = {}
        for t in (1.0, 5.0, 9.0):
            r = client.get(f"/videos/{bikes['video_id']}/thumbnail", params={"t": t, "width": 160})
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            img = Image.open(io.BytesIO(r.content))
            assert img.format == "JPEG" and img.size == (160, 68)  # 640x272 scaled to 160 wide
            thumbs[t] = np.asarray(img.convert("RGB"), np.float32)
    frames = {f.time: np.asarray(f.image, np.float32) for f in iter_frames(footage["bikes.mp4"], (160, 68), fps=1.0)}
    for t, thumb in thumbs.items():
        errors = {ft: float(np.abs(thumb - im).mean()) for ft, im in frames.items()}
        nearest = min(errors, key=errors.get)
        assert abs(nearest - t) <= 0.5, (t, sorted(errors.items(), key=lambda kv: kv[1])[:3])


def test_media_answers_ranges_with_the_files_bytes(live_server, footage, assert_error, wait_job):
    data = footage["bikes.mp4"].read_bytes()
    with live_server.client() as client:
        bikes = next(v for v in client.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
        url = f"/videos/{bikes['video_id']}/media"
        full = client.get(url)
        assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
        assert full.headers["accept-ranges"] == "bytes"
        part = client.get(url, headers={"Range": "bytes=1000-1999"})
        assert part.status_code == 206 and part.content == data[1000:2000]
        assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        tail = client.get(url, headers={"Range": "bytes=-500"})
        assert tail.status_code == 206 and tail.content == data[-500:]
        open_end = client.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
        assert open_end.status_code == 206 and open_end.content == data[-10:]
        assert_error(client.get(url, headers={"Range": f"bytes={len(data) + 5}-"}), 416)
        assert_error(client.get(url, headers={"Range": "bytes=abc"}), 400)


def test_metrics_hold_the_stage_histograms_after_a_search(live_server, query_clip):
    with live_server.client() as client:
        with open(query_clip, "rb") as f:
            # the defaults (insets on): the frames and any insets found go through the encode scheduler
            assert client.post("/search", files={"file": ("q.mp4", f, "video/mp4")}).status_code == 200
        assert client.get("/videos/nope").status_code == 404
        text = client.get("/metrics").text
    for stage in ("decode", "encode", "search"):
        assert re.search(rf'vidsearch_stage_seconds_count{{stage="{stage}"}} [1-9]', text), stage
    for scheduler in ("encode", "search"):
        assert re.search(rf'vidsearch_batch_size_count{{scheduler="{scheduler}"}} [1-9]', text), scheduler
        assert re.search(rf'vidsearch_queue_wait_seconds_count{{scheduler="{scheduler}"}} [1-9]', text), scheduler
    assert re.search(r'vidsearch_http_requests_total{endpoint="/search",method="POST",status="200"} [1-9]', text)
    assert re.search(r'vidsearch_http_errors_total{endpoint="/videos/{video_id}",status="404",type="NotFoundError"} '
                     r'[1-9]', text)
    assert re.search(r"vidsearch_videos 5\.0", text)
    # the shapes warmed up (those the target and the memory budget allow; always 1) are exported
    assert re.search(r'vidsearch_scheduler_service_seconds{scheduler="encode",shape="1"} (0\.0*[1-9]|[1-9])', text)
    assert re.search(r'vidsearch_scheduler_admitted_total{scheduler="search"} [1-9]', text)


def test_openapi_and_docs_page_are_local(live_server):
    with live_server.client() as client:
        schema = client.get("/openapi.json").json()
        for path in ("/search", "/videos", "/videos/{video_id}", "/jobs/{job_id}", "/videos/{video_id}/thumbnail",
                     "/videos/{video_id}/media", "/health", "/metrics"):
            assert path in schema["paths"], path
        docs = client.get("/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert not re.search(r"https?://", docs.text), re.findall(r"https?://\S+", docs.text)
        for asset in re.findall(r'(?:href|src)="(/[^"]+)"', docs.text):
            assert client.get(asset).status_code == 200, asset
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


# ------------------------------------------------------------------------------------- writes (api_server)
def test_index_job_by_path_reports_each_file_and_makes_them_searchable(api, roots, footage, assert_error, wait_job):
    before = api.get("/health").json()
    # the session's server is shared: test_security.py indexes the whole allowed root, so these two files may be
    # in it already when it ran first (xdist orders files freely); each is expected indexed or skipped accordingly
    known = {v["video_id"] for v in api.get("/videos", params={"limit": 1000}).json()["videos"]}
    clips = roots["allowed"] / "clips"
    want = {n: "skipped" if hashlib.sha256((clips / n).read_bytes()).hexdigest()[:12] in known else "indexed"
            for n in ("rgb.m4v", "v2.m4v")}
    r = api.post("/videos", json={"paths": [str(clips)]})
    assert r.status_code == 202, r.text
    job = wait_job(api, r.json()["job_id"])
    assert job["status"] == "done" and job["error"] is None and job["done"] == job["total"] == 2
    assert [Path(f["path"]).name for f in job["files"]] == ["rgb.m4v", "v2.m4v"]
    assert {Path(f["path"]).name: f["status"] for f in job["files"]} == want, job["files"]
    assert all(len(f["video_id"]) == 12 and (f["segments"] > 0 or f["status"] == "skipped") for f in job["files"])
    n_new = sum(s == "indexed" for s in want.values())
    assert job["summary"] == {"indexed": n_new, "skipped": 2 - n_new, "failed": 0}
    assert set(job["files"][0]) == {"path", "status", "video_id", "segments", "duration", "error", "timings_s"}
    assert job["created"].endswith("Z") and job["finished"] is not None
    assert api.get("/jobs").json()["jobs"][0]["job_id"] == job["job_id"]
    after = api.get("/health").json()
    assert after["videos"] == before["videos"] + n_new and (n_new == 0 or after["generation"] > before["generation"])
    # searchable at once, by upload and by stored range
    v2 = next(f for f in job["files"] if f["path"].endswith("v2.m4v"))
    with open(footage["v2.m4v"], "rb") as f:
        found = api.post("/search", files={"file": ("v2.m4v", f)}, data={"k": "1"}).json()
    # an exact copy: raw similarity ~1, normalised (the default score) minus half its background
    assert found["results"][0]["video_id"] == v2["video_id"] and found["results"][0]["score"] > 0.85
    found = api.post("/search", data={"ref": f"{v2['video_id']}@1-3", "k": "1"}).json()
    assert found["results"][0]["video_id"] == v2["video_id"]
    # the same folder again: every file skipped
    again = wait_job(api, api.post("/videos", json={"paths": [str(roots["allowed"] / "clips")]}).json()["job_id"])
    assert again["summary"] == {"indexed": 0, "skipped": 2, "failed": 0}


def test_upload_job_with_a_unicode_name_then_delete(api, footage, assert_error, wait_job):
    with open(footage["box.mp4"], "rb") as f:
        r = api.post("/videos", files=[("file", ("boîte à vidéo 盒子.mp4", f, "video/mp4"))])
    assert r.status_code == 202, r.text
    job = wait_job(api, r.json()["job_id"])
    assert job["status"] == "done" and job["summary"]["indexed"] == 1, job
    video_id = job["files"][0]["video_id"]
    row = api.get(f"/videos/{video_id}").json()
    assert row["name"] == "boîte à vidéo 盒子.mp4" and Path(row["path"]).read_bytes() == footage["box.mp4"].read_bytes()
    assert api.get(f"/videos/{video_id}/thumbnail", params={"t": 2}).status_code == 200
    assert api.delete(f"/videos/{video_id}").json() == {"removed": video_id}
    assert_error(api.get(f"/videos/{video_id}"), 404, "NotFoundError")
    assert_error(api.delete(f"/videos/{video_id}"), 404, "NotFoundError")
    with open(footage["box.mp4"], "rb") as f:
        found = api.post("/search", files={"file": ("box.mp4", f)}, data={"k": "3"}).json()
    assert video_id not in [x["video_id"] for x in found["results"]]


def test_searches_keep_answering_while_a_job_indexes(api, footage, tmp_path):
    """Searches during an index job all succeed; the new video is found once its job is done."""
    with open(footage["cup.mp4"], "rb") as f:
        job_id = api.post("/videos", files={"file": ("cup.mp4", f)}).json()["job_id"]
    bikes = next(v for v in api.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
    statuses = []
    while True:
        statuses.append(api.post("/search", data={"ref": f"{bikes['video_id']}@0-3"}).status_code)
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            break
    assert job["status"] == "done" and set(statuses) == {200}
    cup = job["files"][0]["video_id"]
    found = api.post("/search", data={"ref": f"{cup}@1-4", "k": "1"}).json()
    assert found["results"][0]["video_id"] == cup


def test_another_writer_holding_the_lock(api, api_server, footage, assert_error, wait_job):
    """While another process writes the collection (its writer lock held), a job fails with that reason
    and a delete answers 409 (the video stays); both work once the lock is free. (The upload is an
    animated GIF: indexed as a video.)"""
    from vidsearch.store.lock import WriterLock

    bikes = next(v for v in api.get("/videos").json()["videos"] if v["name"] == "bikes.mp4")
    data = footage["iscc/demo.gif"].read_bytes()
    with WriterLock(api_server.collection):
        job = wait_job(api, api.post("/videos", files={"file": ("anim.gif", data)}).json()["job_id"])
        assert job["status"] == "failed" and "locked" in job["error"], job
        assert_error(api.delete(f"/videos/{bikes['video_id']}"), 409, "CollectionLockedError")
    assert api.get(f"/videos/{bikes['video_id']}").status_code == 200
    job = wait_job(api, api.post("/videos", files={"file": ("anim.gif", data)}).json()["job_id"])
    assert job["status"] == "done" and job["summary"]["indexed"] == 1, job
    gif = api.get(f"/videos/{job['files'][0]['video_id']}").json()
    assert gif["name"] == "anim.gif" and not gif["is_image"] and gif["duration"] > 4
    assert api.delete(f"/videos/{gif['video_id']}").json() == {"removed": gif["video_id"]}


def test_a_query_longer_than_the_limit_is_refused(api, footage, assert_error, wait_job):
    with open(footage["iscc/demo.webm"], "rb") as f:  # 60 s, the limit is 30 s; 1.8 MB fits the upload limit
        err = assert_error(api.post("/search", files={"file": ("long.webm", f)}), 400, "QueryError")
    assert "30 s" in err["message"] and "long.webm" in err["message"] and "/tmp" not in err["message"]


# ------------------------------------------------------------------------------ the batched query path
@pytest.fixture(scope="module")
def service(built_collection):
    from vidsearch.search.engine import Engine
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    engine = Engine.open(built_collection)
    # a target no test here reaches: these tests are about what batches compute, not about admission
    svc = QueryService(engine, ServeSettings(max_batch=16, warm_up=False, latency_target_ms=60_000,
                                             ref_latency_target_ms=60_000), ServeMetrics())
    yield svc
    svc.close()
    engine.close()


def test_decode_then_encode_equals_encode_file(service, query_clip, footage):
    """``encode_file`` split into decode_file + (batched) encode + finish gives the same vectors."""
    media = service.media
    for path in (query_clip, footage["carphone_pristine.mp4"]):
        whole = media.encode_file(path)
        decoded = media.decode_file(path)
        split = media.finish(decoded, media.encoder.encode(decoded.images), 0.1)
        assert split.info == whole.info and np.array_equal(split.times, whole.times)
        assert split.segments == whole.segments
        np.testing.assert_allclose(split.frame_vectors, whole.frame_vectors, atol=1e-5)
        np.testing.assert_allclose(split.segment_vectors, whole.segment_vectors, atol=1e-5)


@pytest.fixture(scope="module")
def pip_clip(tmp_path_factory) -> Path:
    """demo.mp4 (in the collection) 20-24 s shown picture-in-picture over vtest.avi (not in it), 5 frames/s."""
    from vidsearch.evaluate import edits, samples

    src = next(p for p in samples.iscc_videos() if p.name == "demo.mp4")
    host = next(p for p in samples.opencv_videos() if p.name == "vtest.avi")
    frames, fps = edits.decode_rgb(src, 20, 24, max_fps=5)
    background, _ = edits.decode_rgb(host, 0, 4, max_fps=5)
    pip, fps = edits.picture_in_picture(background)(frames, fps)
    return edits.encode_rgb(pip, fps, tmp_path_factory.mktemp("pip") / "pip.mp4")


def test_decode_with_insets_then_encode_equals_encode_file_with_insets(service, pip_clip):
    """``decode_file(insets=True)`` cuts out the insets that ``encode_file(insets=True)`` encodes; their vectors,
    encoded in one call with the frames and placed back by ``finish``, give the same region vectors."""
    from vidsearch.encode.layout import MAX_INSETS
    from vidsearch.errors import ShapeError

    media = service.media
    whole = media.encode_file(pip_clip, insets=True)
    decoded = media.decode_file(pip_clip, insets=True)
    assert decoded.insets is not None and len(decoded.insets) >= len(decoded.images)  # found in every frame
    assert decoded.units == len(decoded.images) + len(decoded.insets) == len(decoded.all_images)
    assert decoded.insets.shape[1:] == decoded.images.shape[1:]
    split = media.finish(decoded, media.encoder.encode(decoded.all_images), 0.1)
    np.testing.assert_allclose(split.frame_vectors, whole.frame_vectors, atol=1e-5)
    np.testing.assert_allclose(split.segment_vectors, whole.segment_vectors, atol=1e-5)
    assert len(split.region_segment_vectors) == len(whole.region_segment_vectors) == MAX_INSETS
    for a, b in zip(split.region_segment_vectors, whole.region_segment_vectors):
        np.testing.assert_allclose(a, b, atol=1e-5)
    for a, b in zip(split.region_segment_blank, whole.region_segment_blank):
        assert np.array_equal(a, b)
    assert not split.region_segment_blank[0].all()  # the first slot holds a real inset
    with pytest.raises(ShapeError, match="one per decoded frame and inset"):
        media.finish(decoded, media.encoder.encode(decoded.images))  # the insets' vectors missing
    plain = media.decode_file(pip_clip)
    assert plain.insets is None and plain.units == len(plain.images)


def test_a_default_query_encodes_its_insets_in_the_scheduler_batch(service, pip_clip):
    """With the defaults (insets on) the picture-in-picture copy is found through the encode scheduler: its
    batch holds the frames and the insets the pool cut out (more units than frames), the answer equals the
    CLI's (``Engine.search``), and the insets per frame are learnt for the next reservation."""
    import asyncio

    from vidsearch.search.results import SearchParams

    service.start()
    decoded = service.media.decode_file(pip_clip, insets=True)
    before = service.encoder.controller.batch_units
    service._insets_per_frame = 0.0
    answer = asyncio.run(asyncio.wait_for(service.search_file(pip_clip, "pip.mp4", 3, SearchParams()), 60))
    assert service.encoder.controller.batch_units - before == decoded.units > len(decoded.images)
    assert service._insets_per_frame > 0  # learnt from this query
    assert service.predicted_units(4, insets=True) > 4 and service.predicted_units(4, insets=False) == 4
    assert Path(answer.result.results[0].path).name == "demo.mp4"
    m = answer.result.results[0].matches[0]
    assert abs(m.ref_start - 20) <= 1.5 and abs(m.ref_end - 24) <= 1.5
    cli = service.engine.search(pip_clip, k=3)
    assert _rounded(answer.result.to_dict()["results"]) == _rounded(cli.to_dict()["results"])
    off = asyncio.run(asyncio.wait_for(service.search_file(pip_clip, "pip.mp4", 3, SearchParams(insets=False)), 60))
    top_off = next((r.score for r in off.result.results if Path(r.path).name == "demo.mp4"), 0.0)
    assert answer.result.results[0].score > top_off + 0.1  # the insets are what finds it


def test_encode_batch_pads_and_splits_back(service, query_clip, footage):
    """Frames of five queries (4, 4, 6, 5 and 4 frames: 23, past the largest shape 16) in one batch come
    back per query equal to encoding each alone."""
    decoded = [service.media.decode_file(p) for p in (query_clip, footage["carphone_pristine.mp4"],
                                                        footage["bigbuckbunny.mp4"], footage["v1.m4v"], query_clip)]
    from vidsearch.serve.query import EncodeItem

    items = [EncodeItem(d.images) for d in decoded]
    assert sum(len(d.images) for d in decoded) > service.encoder.shapes[-1]
    batched = service._encode_batch(items)
    assert len(batched) == len(items)
    for d, (vectors, seconds) in zip(decoded, batched):
        assert vectors.shape == (len(d.images), service.media.frame_dim) and seconds > 0
        np.testing.assert_allclose(vectors, service.media.encoder.encode(d.images), atol=1e-5)


def _rounded(results: list[dict]) -> list[dict]:
    """Results with every score rounded to 5 decimals."""
    return [{**r, "score": round(r["score"], 5),
             "matches": [{**m, "score": round(m["score"], 5)} for m in r["matches"]]} for r in results]


def test_search_batch_equals_one_query_at_a_time(service, built_collection):
    """A batch mixing k, params, stored ranges (read by the worker), encoded media and a bad ref answers each
    query as ``search_encoded`` alone does, with the JSON of its result; the bad ref gets its own error."""
    import json
    import time

    from vidsearch.errors import NotFoundError
    from vidsearch.search.results import SearchParams
    from vidsearch.serve.query import SearchAnswer, SearchItem

    engine = service.engine
    ids = engine.snapshot.catalog.video_ids
    queries = [(f"{ids[0]}@1-4", 3, SearchParams()), (f"{ids[1]}@0-3", 2, SearchParams()),
               (f"{ids[2]}@1-3", 3, SearchParams(rerank="exact")), (f"{ids[3]}@0-2", 3, SearchParams())]
    now = time.perf_counter()
    items = [SearchItem(q, k, p, now, ref=q) if i % 2 else SearchItem(q, k, p, now, media=engine.encode_query(q))
             for i, (q, k, p) in enumerate(queries)]
    items.insert(2, SearchItem("ffffffffffff@0-2", 3, SearchParams(), now, ref="ffffffffffff@0-2"))
    batched = service._search_batch(items)
    assert isinstance(batched.pop(2), NotFoundError)
    del items[2]
    for item, answer in zip(items, batched):
        assert isinstance(answer, SearchAnswer)
        alone = engine.search_encoded([engine.encode_query(item.name)], [item.name], item.k, item.params)[0]
        # equal up to the float32 rounding of the index's matrix product, whose last bit depends on how many
        # query rows share it (as FAISS's BLAS path does from 20 rows): same videos, ranges; scores to 1e-5
        assert _rounded(answer.result.to_dict()["results"]) == _rounded(alone.to_dict()["results"])
        assert answer.result.results[0].video_id == item.name.split("@")[0]
        sent = json.loads(answer.body)
        assert sent == json.loads(json.dumps(answer.result.to_dict())) and sent["timings_ms"]["total"] > 0


def test_concurrent_uploads_share_encoder_batches(service, query_clip, footage):
    """Concurrent queries through the scheduler: every answer is right, and frames of queries that waited
    for the encoder went together (fewer encoder batches than queries)."""
    import asyncio

    from vidsearch.search.results import SearchParams
    from vidsearch.serve.query import EncodeItem

    service.start()
    paths = [query_clip, footage["carphone_pristine.mp4"], footage["v1.m4v"], query_clip, footage["v1.m4v"],
             footage["carphone_pristine.mp4"]]

    async def run_all():
        # keep the encoder busy (32 frames) while the queries decode, so they queue behind it
        blocker = service.encoder.submit(EncodeItem(np.zeros((32, *service._frame_shape), np.uint8)))
        before = service.encoder.stats()["batches"]
        # the defaults (insets on): frames and insets through the encode scheduler
        results = await asyncio.gather(*(service.search_file(p, p.name, 1, SearchParams()) for p in paths))
        await asyncio.wrap_future(blocker)
        return results, service.encoder.stats()["batches"] - before

    results, ran = asyncio.run(run_all())
    for path, answer in zip(paths, results):
        result = answer.result
        expected = "bikes.mp4" if path == query_clip else path.name
        assert Path(result.results[0].path).name == expected
        assert result.timings_ms["total"] >= result.timings_ms["decode"]
    assert 1 <= ran - 1 < len(paths), ran  # the blocker, then the queries in fewer batches than queries


def test_an_overloaded_upload_is_refused_before_it_is_decoded(built_collection, query_clip):
    """The encode queue cannot take a 4 s clip within the target: 503 at once, from the probe's frame count,
    without a decode (the decode pool is never used)."""
    import asyncio
    import time

    from vidsearch.errors import OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    with Engine.open(built_collection) as engine:
        svc = _service_at_20ms_a_frame(engine)
        try:
            svc.encoder.reserve(8)  # other queries' 8 frames being decoded: 160 ms of encoding ahead
            frames = svc.frames_of(query_clip)
            assert frames[0] >= 4 and frames[1] is False
            t0 = time.perf_counter()
            with pytest.raises(OverloadedError, match="target") as info:
                asyncio.run(asyncio.wait_for(svc.search_file(query_clip, "q.mp4", 3, SearchParams(),
                                                             frames=frames), 5))
            assert time.perf_counter() - t0 < 0.02 and info.value.retry_after > 0
            assert svc.pool._work_queue.qsize() == 0 and not svc.pool._threads  # nothing went to decoding
            assert svc.encoder.controller.reserved_units == 8  # the refused query holds no reservation
            svc.precheck()  # one frame would still fit
        finally:
            svc.close()


def _service_at_20ms_a_frame(engine: Any) -> Any:
    """A QueryService (no warm-up, 200 ms target, no headroom, batches of 4) whose encoder takes 20 ms a frame."""
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    svc = QueryService(engine, ServeSettings(max_batch=4, warm_up=False, latency_target_ms=200,
                                             admission_headroom=0.0), ServeMetrics())
    for shape in svc.encoder.shapes:
        svc.encoder.controller.set_service(shape, 0.020 * shape)
    return svc


def test_an_upload_is_admitted_once_its_form_is_read_and_its_reservation_kept(built_collection, query_clip,
                                                                               tmp_path):
    """``hold(params, spent_s)``, called once the form is read and before the upload is stored, refuses exactly
    the images ``_admit`` would refuse after storing and probing them (at 2x load they then get their 503 before
    that work: bench/serve.py measured those late refusals at 9-18 ms inside the server against <= 1.5 ms for the
    early ones), and reserves their units at once; ``search_file`` takes the hold for an image, trades it for a
    video's reservation, and gives it back when the query fails; the check from the headers stays a lower bound."""
    import asyncio

    import numpy as np
    from PIL import Image

    from vidsearch.errors import DecodeError, OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams

    with Engine.open(built_collection) as engine:
        svc = _service_at_20ms_a_frame(engine)
        try:
            svc._insets_per_frame = 1.0  # an image with insets: 2 encode units, its insets found in decoding
            svc._decode_cost[(True, True)] = 0.040
            ctl = svc.encoder.controller
            outcomes = set()
            for reserved in range(12):
                for insets in (False, True):
                    for spent_s in (0.0, 0.03):
                        if reserved:
                            svc.encoder.reserve(reserved)
                        try:
                            try:
                                hold = svc.hold(SearchParams(insets=insets), spent_s)
                                assert hold.units == (2 if insets else 1) and ctl.reserved_units == reserved + hold.units
                                hold.release()
                                hold.release()  # twice: nothing more
                                early = True
                            except OverloadedError:
                                early = False
                            assert ctl.reserved_units == reserved
                            try:
                                svc.encoder.release(svc._admit(1, True, spent_s, insets))
                                late = True
                            except OverloadedError:
                                late = False
                            assert early == late, (reserved, insets, spent_s)
                            outcomes.add(early)
                            if late:
                                svc.precheck()  # the check from the headers never refuses what admission lets in
                        finally:
                            if reserved:
                                svc.encoder.release(reserved)
            assert outcomes == {True, False}  # the grid crosses the target
            # the first load at which an image with its inset is refused: one frame alone still passes the headers
            for reserved in range(1, 20):
                svc.encoder.reserve(reserved)
                try:
                    try:
                        svc.hold(SearchParams(insets=True), 0.0).release()
                    except OverloadedError:
                        svc.precheck()
                        break
                finally:
                    svc.encoder.release(reserved)
            else:
                pytest.fail("no load refused an image with insets")
            # the time to store and probe uploads (learnt) counts before the decode: with 250 ms of it an image
            # cannot make the 200 ms target behind any work, and the hold refuses it at a lower load
            first_refused = {}
            for store_s in (0.0, 0.25):
                for _ in range(16):
                    svc.learn_store(store_s)
                for reserved in range(1, 20):
                    svc.encoder.reserve(reserved)
                    try:
                        svc.hold(SearchParams(insets=False), 0.0).release()
                    except OverloadedError:
                        first_refused[store_s] = reserved
                        break
                    finally:
                        svc.encoder.release(reserved)
            assert first_refused == {0.0: first_refused[0.0], 0.25: 1} and first_refused[0.0] > 1, first_refused
            for _ in range(16):
                svc.learn_store(0.0)
            # the hold's life in search_file: taken by an image, traded by a video, given back on a failure
            svc.start()
            image = tmp_path / "q.png"
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(image)
            bad = tmp_path / "bad.png"
            bad.write_bytes(b"not an image")
            for path in (image, query_clip, bad):
                hold = svc.hold(SearchParams(), 0.0)
                assert hold.units >= 1 and ctl.reserved_units == hold.units
                search = svc.search_file(path, path.name, 3, SearchParams(), hold=hold)
                if path is bad:
                    with pytest.raises(DecodeError):
                        asyncio.run(asyncio.wait_for(search, 60))
                else:
                    assert asyncio.run(asyncio.wait_for(search, 60)).result is not None
                assert hold.units == 0 and ctl.reserved_units == 0, path.name
        finally:
            svc.close()


def test_file_queries_are_admitted_within_the_target_less_its_headroom(built_collection):
    """An image predicted to answer in ~189 ms (9 encodes of 21 ms: 8 frames ahead, then its own) is admitted under a
    200 ms target with no headroom and refused with a 10 % headroom (admitted up to 180 ms), which covers the time
    a client waits outside the server's clock."""
    from vidsearch.errors import ConfigError, OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    assert ServeSettings().admission_headroom == 0.2
    for bad in (-0.1, 1.0, True, "0.1"):
        with pytest.raises(ConfigError, match="admission_headroom"):
            ServeSettings(admission_headroom=bad)
    with Engine.open(built_collection) as engine:
        for headroom, admitted in ((0.0, True), (0.1, False)):
            settings = ServeSettings(max_batch=4, warm_up=False, latency_target_ms=200, admission_headroom=headroom)
            svc = QueryService(engine, settings, ServeMetrics())
            try:
                assert svc.encoder.policy.latency_target_ms == pytest.approx(200 * (1 - headroom))
                for shape in svc.encoder.shapes:
                    svc.encoder.controller.set_service(shape, 0.021 * shape)
                svc.encoder.reserve(8)
                if admitted:
                    svc.precheck()
                else:
                    with pytest.raises(OverloadedError, match="target"):
                        svc.precheck()
            finally:
                svc.close()


def test_under_load_a_file_query_is_served_by_the_light_encoder_and_says_so(built_collection, query_clip):
    """--light-encoder sscd-distilled: a clip that the collection's encoder (sscd) cannot serve within the target
    is encoded by the light encoder when that fits (its answer names it, the metric counts it); when even the light
    one cannot make it, a 503 as before; without a light encoder, a 503."""
    import asyncio

    from vidsearch.errors import ConfigError, OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    with Engine.open(built_collection) as engine:
        with pytest.raises(ConfigError, match="cannot query a collection built with 'sscd'"):
            QueryService(engine, ServeSettings(warm_up=False, light_encoder="effnet-lite0"), ServeMetrics())
        for light in ("sscd-distilled", None):
            metrics = ServeMetrics()
            svc = QueryService(engine, ServeSettings(max_batch=4, warm_up=False, latency_target_ms=200,
                                                     light_encoder=light), metrics)
            try:
                svc.start()
                for shape in svc.encoder.shapes:
                    svc.encoder.controller.set_service(shape, 0.1 * shape)
                svc.encoder.reserve(8)  # 800 ms of encoding ahead: not one more frame within the 200 ms target
                if light is None:
                    with pytest.raises(OverloadedError):
                        svc.precheck()  # the upload is refused before it is stored
                else:
                    svc.precheck()  # the light encoder can take it: the upload is let in
                frames = svc.frames_of(query_clip)
                svc._light_frame_s = 0.005  # the encode scheduler cannot take it (8 frames ahead), the light one can
                svc._decoding_s = 0.06  # other queries' work in the pool
                search = svc.search_file(query_clip, "q.mp4", 3, SearchParams(insets=True), frames=frames)
                if light is None:
                    with pytest.raises(OverloadedError, match="target"):
                        asyncio.run(search)
                    continue
                answer = asyncio.run(asyncio.wait_for(search, 60))
                assert answer.result.query_encoder == "sscd-distilled"
                assert answer.result.to_dict()["query_encoder"] == "sscd-distilled" and answer.result.results
                assert metrics.registry.get_sample_value("vidsearch_light_encoder_queries_total") == 1
                assert svc._light_frame_s != 0.005 and svc._decoding_s == pytest.approx(0.06)  # learnt; released
                assert svc.encoder.controller.reserved_units == 8  # the refused reservation was not kept
                svc._decoding_s = 10.0  # not even the light encoder can make it: 503
                with pytest.raises(OverloadedError):
                    asyncio.run(svc.search_file(query_clip, "q.mp4", 3, SearchParams(insets=True), frames=frames))
                svc._decoding_s = 0.06  # a query that asked for an encoder is never switched
                with pytest.raises(OverloadedError):
                    asyncio.run(svc.search_file(query_clip, "q.mp4", 3,
                                                SearchParams(insets=True, query_encoder="sscd"), frames=frames))
            finally:
                svc.close()


def test_admission_counts_the_time_a_request_has_already_taken(built_collection):
    """A file query that fits the target when it arrives is refused once reading its upload has taken most
    of the target (the time from the request's start counts, not only what is left to do)."""
    from vidsearch.errors import OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    with Engine.open(built_collection) as engine:
        svc = QueryService(engine, ServeSettings(max_batch=4, warm_up=False, latency_target_ms=200), ServeMetrics())
        try:
            for shape in svc.encoder.shapes:
                svc.encoder.controller.set_service(shape, 0.020 * shape)
            svc.encoder.reserve(2)  # another query's 2 frames being decoded: 40 ms of encoding ahead
            svc._admit(1, True, spent_s=0.0)  # an image that just arrived: admitted (and reserved)
            svc.encoder.release(1)
            with pytest.raises(OverloadedError, match="target"):
                svc._admit(1, True, spent_s=0.19)  # the same after 190 ms spent reading it: refused
            assert svc.encoder.controller.reserved_units == 2
        finally:
            svc.close()


def test_a_query_with_crops_is_refused_at_once_when_the_pool_cannot_meet_the_target(built_collection, query_clip):
    """Crops are encoded whole in the decode pool, outside the encode scheduler: with 300 ms of such work
    already admitted, a 4 s clip gets a 503 at once (not a place in the pool's queue); alone, it is admitted
    and answered, and its measured cost is learnt."""
    import asyncio
    import time

    from vidsearch.errors import OverloadedError
    from vidsearch.search.engine import Engine
    from vidsearch.search.results import SearchParams
    from vidsearch.serve.metrics import ServeMetrics
    from vidsearch.serve.query import QueryService
    from vidsearch.serve.settings import ServeSettings

    with Engine.open(built_collection) as engine:
        svc = QueryService(engine, ServeSettings(max_batch=4, warm_up=False, latency_target_ms=200), ServeMetrics())
        try:
            svc.start()
            frames = svc.frames_of(query_clip)
            svc._decoding_s = 0.3  # other queries' work admitted to the pool, not done yet
            t0 = time.perf_counter()
            with pytest.raises(OverloadedError, match="crops=false and the collection's encoder its frames are batched") as info:
                asyncio.run(svc.search_file(query_clip, "q.mp4", 3, SearchParams(crops=True), frames=frames))
            assert time.perf_counter() - t0 < 0.05 and info.value.retry_after > 0
            assert not svc.pool._threads  # nothing went to the pool
            assert svc._decoding_s == pytest.approx(0.3)
            svc._decoding_s = 0.0  # alone: admitted whatever its predicted cost
            before = svc._whole_frame_s
            answer = asyncio.run(asyncio.wait_for(
                svc.search_file(query_clip, "q.mp4", 3, SearchParams(crops=True), frames=frames), 60))
            assert answer.result.results and svc._decoding_s == pytest.approx(0.0)
            assert svc._whole_frame_s != before  # learnt from the timings of this query
        finally:
            svc.close()
