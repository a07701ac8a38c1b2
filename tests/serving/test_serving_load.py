"""Load: 200 requests at concurrency 8 against the real server (plain, streamed and V2 requests mixed), zero
errors, and the server's resident memory bounded (sampled during the run from /proc)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from sifthinker.serving import openai_api as oa

N_REQUESTS, CONCURRENCY = 200, 8
RSS_GROWTH_LIMIT_MB = 300  # growth over a warmed-up server; a leak of ~1.5 MB per request would break it


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_200_requests_at_concurrency_8_without_errors_and_bounded_memory(serving_server):
    url = serving_server.url
    name = serving_server.model_name
    images = [(oa.data_url(_image(i)), oa.encode_image(_image(i))) for i in range(8)]

    def one(i: int) -> tuple[int, float]:
        url_img, b64 = images[i % len(images)]
        t0 = time.monotonic()
        kind = i % 4
        if kind == 3:
            r = requests.post(f"{url}/v2/models/{name}/infer", timeout=120, json={
                "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]},
                           {"name": "question", "shape": [1], "datatype": "BYTES", "data": [f"How many cubes? {i}"]}],
                "parameters": {"max_tokens": 16}})
            ok = r.status_code == 200 and r.json()["outputs"][0]["name"] == "text"
        else:
            body = {"model": name, "max_tokens": 16, "stream": kind == 2, "messages": [{"role": "user", "content": [
                {"type": "text", "text": f"Which is closer? {i}"}, {"type": "image_url", "image_url": {"url": url_img}}]}]}
            r = requests.post(f"{url}/openai/v1/chat/completions", json=body, timeout=120, stream=kind == 2)
            if kind == 2:
                lines = [ln for ln in r.iter_lines(decode_unicode=True) if ln]
                ok = r.status_code == 200 and lines[-1] == "data: [DONE]" and '"sif"' in lines[-2]
            else:
                ok = r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
        return (r.status_code if ok else -r.status_code), time.monotonic() - t0

    pid = serving_server.proc.pid
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:  # warm up: first batches, caches
        assert [c for c, _ in pool.map(one, range(16))] == [200] * 16
    base = _rss_mb(pid)
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append(_rss_mb(pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.monotonic()
    try:
        with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
            results = list(pool.map(one, range(N_REQUESTS)))
    finally:
        stop.set()
        sampler.join()
    wall = time.monotonic() - t0
    codes = [c for c, _ in results]
    assert codes == [200] * N_REQUESTS, {c: codes.count(c) for c in set(codes)}
    peak = max(samples + [_rss_mb(pid)])
    lat = sorted(t for _, t in results)
    print(f"load: {N_REQUESTS} requests at concurrency {CONCURRENCY} in {wall:.1f}s ({N_REQUESTS / wall:.1f} req/s), "
          f"p50 {lat[len(lat) // 2]:.2f}s p99 {lat[int(len(lat) * 0.99) - 1]:.2f}s; RSS {base:.0f} MB before, "
          f"peak {peak:.0f} MB, after {_rss_mb(pid):.0f} MB")
    assert peak - base < RSS_GROWTH_LIMIT_MB
    assert serving_server.proc.poll() is None
