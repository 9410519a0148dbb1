"""Artifact stores on this machine: what the bundle route's streaming costs, per store.

Serves one bundle-sized file over real HTTP (uvicorn on loopback, httpx client) three ways:

- ``FileResponse``: how the route served local bundles before stores streamed (the baseline);
- ``local``: the route's way now, ``StreamingResponse`` over ``LocalArtifactStore.read``;
- ``s3``: the same over ``S3ArtifactStore.read`` against moto's S3 server (in this process, so
  it competes for the same cores; real S3/MinIO latency differs - this measures our overhead).

and times a whole download and a resume (``Range: bytes=<half>-``), plus ``put`` per store.

    PYTHONPATH=. python bench/store_bench.py [--mib 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench/1.0.0.tar.gz"


def _app(stores: dict[str, Any], path: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response, StreamingResponse
    from starlette.routing import Route

    from fleet_server.api.ranges import byte_range

    def baseline(request: Request) -> Response:
        return FileResponse(path, media_type="application/gzip")

    def streamed(request: Request) -> Response:
        store = stores[request.path_params["kind"]]
        size = store.size(KEY)
        start, end = byte_range(request.headers.get("range"), size) or (0, size)
        status = 206 if request.headers.get("range") else 200
        headers = {"Content-Length": str(end - start)}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        return StreamingResponse(
            store.read(KEY, start, end), status, headers, media_type="application/gzip"
        )

    return Starlette(
        routes=[Route("/file", baseline), Route("/store/{kind}", streamed)],
    )


@contextmanager
def _serve(app: Any) -> Iterator[str]:
    import uvicorn

    from tests.utils.net import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _median_ms(run: Callable[[], None], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32, help="bundle size in MiB")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    import httpx

    from fleet_server.storage.config import S3StoreConfig
    from fleet_server.storage.local import LocalArtifactStore

    size = args.mib * 1024 * 1024
    data = os.urandom(size)
    work = Path(tempfile.mkdtemp(prefix="store-bench-"))
    stores: dict[str, Any] = {"local": LocalArtifactStore(root=work / "local")}
    put_ms: dict[str, float] = {}

    def timed_put(kind: str) -> float:
        source = work / "upload"
        times = []
        for i in range(args.repeats):
            source.write_bytes(data)
            key = f"bench/{i}.tar.gz"
            start = time.perf_counter()
            stores[kind].put(key, source)
            times.append((time.perf_counter() - start) * 1000)
            stores[kind].delete(key)
        return statistics.median(times)

    with _moto() as endpoint:
        if endpoint is not None:
            from fleet_server.storage.s3 import S3ArtifactStore
            from tests.utils.s3 import S3Server

            s3 = S3Server(endpoint_url=endpoint)
            bucket = s3.new_bucket()
            config = S3StoreConfig(**s3.store_config(bucket, multipart_threshold_bytes=8 << 20))
            stores["s3"] = S3ArtifactStore(config)
        for kind in stores:
            put_ms[kind] = timed_put(kind)
            (work / "bundle").write_bytes(data)
            stores[kind].put(KEY, work / "bundle")
        path = stores["local"].local_path(KEY)
        rows: list[tuple[str, float, float]] = []
        with _serve(_app(stores, path)) as url, httpx.Client(timeout=60) as client:

            def fetch(target: str, headers: dict[str, str]) -> Callable[[], None]:
                def run() -> None:
                    got = client.get(target, headers=headers)
                    assert got.status_code in (200, 206) and len(got.content) in (size, size // 2)

                return run

            half = {"Range": f"bytes={size // 2}-"}
            targets = {"FileResponse (before)": f"{url}/file"}
            targets |= {f"{kind} store (now)": f"{url}/store/{kind}" for kind in stores}
            for name, target in targets.items():
                whole = _median_ms(fetch(target, {}), args.repeats)
                resume = _median_ms(fetch(target, half), args.repeats)
                rows.append((name, whole, resume))

    print(f"bundle {args.mib} MiB, median of {args.repeats}, loopback HTTP")
    print(f"{'served by':<24}{'whole ms':>10}{'MiB/s':>9}{'resume ms':>11}")
    for name, whole, resume in rows:
        print(f"{name:<24}{whole:>10.1f}{args.mib / whole * 1000:>9.0f}{resume:>11.1f}")
    print(f"{'put into':<24}{'ms':>10}")
    for kind, ms in put_ms.items():
        print(f"{kind:<24}{ms:>10.1f}")
    return 0


@contextmanager
def _moto() -> Iterator[str | None]:
    try:
        import boto3  # noqa: F401
        import moto  # noqa: F401
    except ImportError:
        print("moto/boto3 not installed: the s3 rows are skipped")
        yield None
        return
    from tests.utils.s3 import moto_s3_server

    with moto_s3_server() as server:
        yield server.endpoint_url


if __name__ == "__main__":
    raise SystemExit(main())
