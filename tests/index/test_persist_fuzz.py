"""Fuzzed index loaders (``load_index``): random bytes, truncation, flipped bits in every header byte, every
JSON header field renamed, mistyped or removed, a checksummed blob of another kind, bare FAISS files.

Each damaged file either loads and answers exactly as the original does, or raises a ``CollectionError``
naming the file; never another exception, never a crash. The loads run in one child process (a segfault
fails the test instead of killing pytest), which reports one JSON line per case.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonfuzz import edit_json, key_paths

from vidsearch.index import FlatIndex, IVFPQConfig, IVFPQIndex, IVFSearchParams, MemmapStore
from vidsearch.index.persist import HEADER, MAGIC

N, DIM, K = 2000, 64, 5
SEARCH = IVFSearchParams(nprobe=16, ef_search=64, rerank=64)  # every list probed: results do not depend on the header

# The child assembles each case from pieces (["lit", hex] or ["src", file, start, end]) so that
# hundreds of half-megabyte variants never sit on disk at once.
CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np
from vidsearch.errors import VidsearchError
from vidsearch.index import IVFSearchParams, MemmapStore, load_index

work = Path(sys.argv[1])
vectors, queries = np.load(work / "vectors.npy"), np.load(work / "queries.npy")
store = MemmapStore(vectors)
sources = {p.name: p.read_bytes() for p in work.glob("*.src")}
scratch = work / "case.idx"
explicit = IVFSearchParams(**json.loads(sys.argv[2]))
k = int(sys.argv[3])
for line in open(work / "cases.jsonl"):
    case = json.loads(line)
    scratch.write_bytes(b"".join(bytes.fromhex(p[1]) if p[0] == "lit" else sources[p[1]][p[2]:p[3]]
                                 for p in case["pieces"]))
    out = {"name": case["name"]}
    try:
        index = load_index(scratch, store)
        hits = index.search(queries, k, params=explicit)  # FlatIndex ignores the params
        out["ids"], out["scores"] = hits.ids.tolist(), hits.scores.tolist()
        default = index.search(queries, k)  # the saved search params, whatever the header said
        out["default_ids"] = default.ids.tolist()
        out["len"], out["dim"], out["memory"] = len(index), index.dim, index.memory_bytes()
        out["removed"] = index.remove(np.array([int(hits.ids[0, 0])], np.int64))  # the writer's path
        index.search(queries, k)
    except Exception as exc:
        out["error"], out["vidsearch"], out["message"] = type(exc).__name__, isinstance(exc, VidsearchError), str(exc)
    print(json.dumps(out), flush=True)
"""

WRONG: dict[str, Any] = {"string": "x", "null": None, "list": ["x", None], "negative": -1, "huge": 2**70,
                         "bool": True, "float": 1.5, "object": {"a": 1}, "nan": float("nan"), "zero": 0}


def _unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _split(data: bytes) -> tuple[bytes, dict[str, Any], int]:
    """(fixed header, JSON header, offset of the blob) of a container."""
    _, _, n = HEADER.unpack_from(data)
    return data[: HEADER.size], json.loads(data[HEADER.size : HEADER.size + n]), HEADER.size + n


def _lit(data: bytes) -> list[Any]:
    return ["lit", data.hex()]


def _with_header(src: str, data: bytes, meta: dict[str, Any], version: int = 1) -> list[list[Any]]:
    """Pieces of ``src`` with its JSON header replaced by ``meta`` (the blob and its checksum kept)."""
    raw = json.dumps(meta).encode()
    _, _, blob_at = _split(data)
    return [_lit(HEADER.pack(MAGIC, version, len(raw)) + raw), ["src", src, blob_at, len(data)]]


def _cases(sources: dict[str, bytes]) -> dict[str, tuple[list[list[Any]], str]]:
    """name -> (pieces, expected): "error" (must raise) or "either" (raise, or load and answer as before)."""
    rng = random.Random(13)
    cases: dict[str, tuple[list[list[Any]], str]] = {}
    for size in (0, 1, 7, 8, 19, 20, 21, 100, 4096, 65_536, 600_000):
        cases[f"random-{size}"] = ([_lit(rng.randbytes(size))], "error")
        # random bytes behind a valid magic tag (and version), so they reach the container reader
        cases[f"magic+random-{size}"] = ([_lit(MAGIC + struct.pack("<I", 1) + rng.randbytes(size))], "error")
    for name in ("flat.src", "ivf.src", "bare.src"):
        data = sources[name]
        stem = name.split(".")[0]
        for cut in sorted({*range(64), *range(0, len(data), max(1, len(data) // 40)), len(data) - 1}):
            cases[f"{stem}-truncated-{cut}"] = ([["src", name, 0, cut]], "error")
        cases[f"{stem}-original"] = ([["src", name, 0, len(data)]], "loads")
        cases[f"{stem}-trailing-byte"] = ([["src", name, 0, len(data)], _lit(b"\0")],
                                          "either" if stem == "bare" else "error")
        if stem == "bare":  # no checksum: the loader meets every flipped byte of FAISS's headers and counts
            ids_at = len(data) - 8 * N - 8  # the id count, then the ids
            for i in [*range(82), *range(ids_at, ids_at + 8)]:  # IxM2 and IxFI headers, the float count; the ids' count
                for bit in (0, 5, 7):
                    flipped = bytes([data[i] ^ (1 << bit)])
                    cases[f"bare-flip-{i}-{bit}"] = ([["src", name, 0, i], _lit(flipped), ["src", name, i + 1, len(data)]],
                                                     "error" if i >= 74 else "either")
            continue
        fixed, meta, blob_at = _split(data)
        for i in range(HEADER.size):  # every bit of the fixed header
            for bit in range(8):
                flipped = bytes([data[i] ^ (1 << bit)])
                cases[f"{stem}-fixed-flip-{i}-{bit}"] = ([["src", name, 0, i], _lit(flipped),
                                                          ["src", name, i + 1, len(data)]], "error")
        for i in range(HEADER.size, blob_at):  # a bit of every byte of the JSON header
            flipped = bytes([data[i] ^ (1 << (i % 8))])
            cases[f"{stem}-json-flip-{i}"] = ([["src", name, 0, i], _lit(flipped), ["src", name, i + 1, len(data)]],
                                              "either")
        for i in range(blob_at, len(data), max(1, (len(data) - blob_at) // 50)):  # the checksum catches the blob
            flipped = bytes([data[i] ^ 0x10])
            cases[f"{stem}-blob-flip-{i}"] = ([["src", name, 0, i], _lit(flipped), ["src", name, i + 1, len(data)]],
                                              "error")
        for path in key_paths(meta):
            label = ".".join(path)
            cases[f"{stem}-{label}-removed"] = (_with_header(name, data, edit_json(meta, path, "remove")), "either")
            cases[f"{stem}-{label}-renamed"] = (_with_header(name, data, edit_json(meta, path, "rename")), "either")
            for kind, value in WRONG.items():
                cases[f"{stem}-{label}-{kind}"] = (_with_header(name, data, edit_json(meta, path, "set", value)), "either")
        for version in (0, 2, 2**32 - 1):
            cases[f"{stem}-version-{version}"] = (_with_header(name, data, meta, version), "error")
        for other in ("flat.src", "ivf.src", "ivf-32d.src", "bare.src"):  # a valid checksum over another blob
            if other == name:
                continue
            blob = sources[other][_split(sources[other])[2]:] if other != "bare.src" else sources[other]
            forged = {**meta, "blob_bytes": len(blob), "blob_sha256": hashlib.sha256(blob).hexdigest()}
            raw = json.dumps(forged).encode()
            same = {name, other} == {"flat.src", "bare.src"}  # the same flat index, serialised by FAISS alike
            cases[f"{stem}-blob-of-{other.split('.')[0]}"] = ([_lit(HEADER.pack(MAGIC, 1, len(raw)) + raw), _lit(blob)],
                                                              "loads" if same else "error")
        for label, header in (("array", b"[]"), ("string", b'"x"'), ("nested", b"[" * 100_000),
                              ("not-utf8", b"\xff\xfe{}"), ("empty", b"")):
            cases[f"{stem}-json-{label}"] = ([_lit(HEADER.pack(MAGIC, 1, len(header)) + header),
                                              ["src", name, blob_at, len(data)]], "error")
    return cases


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import faiss

    work = tmp_path_factory.mktemp("persist-fuzz")
    vectors, queries = _unit(N, 0), _unit(8, 1)
    np.save(work / "vectors.npy", vectors)
    np.save(work / "queries.npy", queries)
    flat = FlatIndex(DIM)
    flat.add(np.arange(N, dtype=np.int64), vectors)
    flat.info = {"generation": 3, "segment_rows": N}
    flat.save(work / "flat.src")
    faiss.write_index(flat._index, str(work / "bare.src"))  # a flat index from before the container
    ivf = IVFPQIndex(DIM, IVFPQConfig(nlist=16, pq_m=8), MemmapStore(vectors))
    ivf.train(vectors)
    ivf.add(np.arange(N, dtype=np.int64), vectors)
    ivf.info = {"generation": 3, "segment_rows": N}
    ivf.save(work / "ivf.src")
    narrow = IVFPQIndex(32, IVFPQConfig(nlist=16, pq_m=8))
    narrow.train(vectors[:, :32].copy())
    narrow.save(work / "ivf-32d.src")
    expected = {"flat": flat.search(queries, K), "ivf": ivf.search(queries, K, SEARCH)}
    (work / "expected.json").write_text(json.dumps({k: [v.ids.tolist(), v.scores.tolist()] for k, v in expected.items()}))
    return work


def test_damaged_index_files_raise_collection_errors_or_load_intact(work: Path):
    sources = {p.name: p.read_bytes() for p in work.glob("*.src")}
    cases = _cases(sources)
    with open(work / "cases.jsonl", "w") as f:
        for name, (pieces, _) in cases.items():
            f.write(json.dumps({"name": name, "pieces": pieces}) + "\n")
    params = json.dumps({"nprobe": SEARCH.nprobe, "ef_search": SEARCH.ef_search, "rerank": SEARCH.rerank})
    proc = subprocess.run([sys.executable, "-c", CHILD, str(work), params, str(K)],
                          capture_output=True, text=True, timeout=600)
    outcomes = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    names = list(cases)
    assert proc.returncode == 0, (f"the loader crashed (exit {proc.returncode}) on case "
                                  f"{names[len(outcomes)] if len(outcomes) < len(names) else '?'}: {proc.stderr[-2000:]}")
    assert [o["name"] for o in outcomes] == names

    expected = json.loads((work / "expected.json").read_text())
    problems = []
    for out in outcomes:
        name = out["name"]
        rule = cases[name][1]
        if "error" in out:
            if out["error"] != "CollectionError" or not out["vidsearch"]:
                problems.append(f"{name}: {out['error']}: {out['message'][:300]}")
            elif "case.idx" not in out["message"]:
                problems.append(f"{name}: the message does not name the file: {out['message'][:300]}")
            elif rule == "loads":
                problems.append(f"{name}: an intact file was refused: {out['message'][:300]}")
            continue
        if rule == "error":
            problems.append(f"{name}: loaded, expected a CollectionError")
            continue
        ids, scores = expected["ivf" if name.startswith("ivf") else "flat"]
        if out["ids"] != ids or not np.allclose(out["scores"], scores, atol=1e-5):
            problems.append(f"{name}: loaded but answers differently: {out['ids'][0]} vs {ids[0]}")
        if (out["len"], out["dim"]) != (N, DIM) or not all(0 <= i < N for row in out["default_ids"] for i in row):
            problems.append(f"{name}: loaded an index of {out['len']} x {out['dim']}, default search {out['default_ids'][0]}")
    assert not problems, f"{len(problems)} of {len(outcomes)} cases:\n" + "\n".join(problems[:60])
