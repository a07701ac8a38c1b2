"""Serving latency and throughput: `sifthinker serve` at concurrency 1, 4 and 8 against the model's own
`generate` called directly in one process.

    PYTHONPATH=src python benchmarks/serve.py [--model DIR] [--max-tokens 128] [--requests 16] [--vllm-env DIR]

Without --model it builds the local recipe's tiny Qwen2.5-VL (random weights: every completion runs to
--max-tokens, so every request costs the same). The server runs as a subprocess (the recipe's serving
settings: dynamic batching up to 8); the client sends the same OpenAI chat request (question, RGB and
depth image as PNG data URLs) from a thread pool. At concurrency 1 a direct call and a server request
alternate, so that both see the same load on a shared machine.
Prints a markdown table: p50/p99 latency, throughput, and the two goals (overhead at concurrency 1 within
10% of direct generate; throughput at concurrency 8 at least 3x concurrency 1).

``--vllm-env DIR`` (``make vllm-env``: ``work/vllm-env``) adds the vLLM rows: vLLM's OpenAI server on the
same model called directly, and the SIF transformer (``sifthinker serve --predictor-host``) in front of it,
at concurrency 1 (alternating, as above), 4 and 8; the goal: the transformer costs <= 5% at concurrency 1.
``--vllm-url URL --vllm-name NAME`` uses a vLLM OpenAI server already running on --model instead (its
``.../v1`` base and served name; vLLM takes minutes to start here), ``--vllm-only`` skips the native rows.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
QUESTION = "Which is closer to the camera, the red cube or the blue sphere?"


def _images(i: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(i)
    return (Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def tiny_model(root: Path) -> Path:
    from sifthinker.config.run_config import RunConfig
    from sifthinker.model import build_tiny_model

    corpus = ['<think><area>[{"bbox_2d":[0,0,1,1],"depth":0.5}]</area><text>the whole image</text></think>'
              "<answer>red cube</answer>", f"{QUESTION} yes no left right 1 2 3"]
    return Path(build_tiny_model(RunConfig.load(REPO / "recipes" / "local.yaml"), root / "model", corpus))


def direct_generator(model_dir: Path, max_tokens: int):
    """A function timing one `generate` call for one request, in this process (images decoded up front)."""
    from sifthinker.config.run_config import RunConfig
    from sifthinker.model import GenRequest, generate, load_model

    model, processor = load_model(model_dir, RunConfig.load(REPO / "recipes" / "local.yaml"))
    reqs = [GenRequest(*_images(i), QUESTION) for i in range(4)]
    generate(model, processor, reqs[:2], max_tokens)  # warm-up

    def one(i: int) -> float:
        t0 = time.perf_counter()
        generate(model, processor, [reqs[i % 4]], max_tokens)
        return time.perf_counter() - t0

    return one


def through_server(url: str, name: str, n: int, concurrency: int, max_tokens: int,
                   route: str = "/openai/v1", sif_prompt: bool = False) -> tuple[list[float], float]:
    """``n`` requests at ``concurrency``: (latencies, wall). ``sif_prompt``: send what the SIF transformer
    sends its predictor (the full SIF prompt, both images), for vLLM called directly."""
    from sifthinker.serving.openai_api import chat_request_body

    bodies = [chat_request_body(QUESTION, *_images(i % 4), name, max_tokens=max_tokens) for i in range(n)]
    if sif_prompt:
        bodies = [predictor_body(b, name) for b in bodies]
    session = requests.Session()

    def one(body: dict) -> float:
        t0 = time.perf_counter()
        r = session.post(f"{url}{route}/chat/completions", json=body, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, bodies))
    return lat, time.perf_counter() - t0


def predictor_body(body: dict, name: str) -> dict:
    """The chat-completions body the SIF transformer sends its predictor for client request ``body``."""
    from sifthinker.config.run_config import RunConfig
    from sifthinker.serving.limits import Limits
    from sifthinker.serving.openai_api import parse_chat_request
    from sifthinker.serving.request import decode
    from sifthinker.serving.transformer import chat_body

    limits = Limits.from_config(RunConfig.load(REPO / "recipes" / "local.yaml").serving)
    return chat_body(decode(parse_chat_request(body, limits), limits, None), name)


def batch_stats(url: str) -> tuple[float, float]:
    """(batches, requests generated) so far, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=30).text
    got = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return got.get("sifthinker_batch_size_count", 0.0), got.get("sifthinker_batch_size_sum", 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--requests", type=int, default=16, help="requests per concurrency level (x concurrency / 2 "
                                                             "for 4 and 8)")
    ap.add_argument("--vllm-env", type=Path, default=None, help="a venv with vLLM (make vllm-env): add vLLM rows")
    ap.add_argument("--vllm-url", default=None, help="a running vLLM OpenAI server's /v1 base (on --model)")
    ap.add_argument("--vllm-name", default="bench-vllm", help="its served model name")
    ap.add_argument("--vllm-only", action="store_true", help="only the vLLM rows")
    args = ap.parse_args()
    if args.vllm_url and not args.model:
        ap.error("--vllm-url needs --model (the folder that server serves)")
    sys.path.insert(0, str(REPO / "src"))
    from sifthinker.serving.process import free_port, serve_subprocess

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or tiny_model(Path(tmp))
        if args.vllm_only:
            print_vllm(vllm_bench(model_dir, Path(tmp), args))
            return
        one_direct = direct_generator(model_dir, args.max_tokens)
        port = free_port()
        with serve_subprocess(str(model_dir), REPO / "recipes" / "local.yaml", port, Path(tmp) / "serve.log",
                              extra_args=["--name", "bench"]) as (url, _):
            through_server(url, "bench", 4, 2, args.max_tokens)  # warm-up
            # concurrency 1: direct calls and server requests alternate, so both see the same machine load
            # (the box is shared); never at the same time
            d, s1 = [], []
            for i in range(args.requests):
                d.append(one_direct(i))
                s1 += through_server(url, "bench", 1, 1, args.max_tokens)[0]
            rows = [("direct `generate` (1 process)", 1, d, sum(d), None),
                    ("`sifthinker serve`, concurrency 1", 1, s1, sum(s1), None)]
            for c in (4, 8):
                b0 = batch_stats(url)
                lat, wall = through_server(url, "bench", args.requests * c // 2, c, args.max_tokens)
                b1 = batch_stats(url)
                rows.append((f"`sifthinker serve`, concurrency {c}", c, lat, wall, (b1[1] - b0[1]) / max(1, b1[0] - b0[0])))
        vllm_rows = vllm_bench(model_dir, Path(tmp), args) if args.vllm_env or args.vllm_url else []
    print(f"max_tokens {args.max_tokens}, {args.requests} requests at concurrency 1\n")
    print("| path | concurrency | requests | p50 s | p99 s | throughput req/s | mean batch |")
    print("|---|---|---|---|---|---|---|")
    thr = {}
    for label, c, lat, wall, mean_batch in rows:
        thr[label] = len(lat) / wall
        mb = "1" if mean_batch is None else f"{mean_batch:.2f}"
        print(f"| {label} | {c} | {len(lat)} | {_pct(lat, .5):.3f} | {_pct(lat, .99):.3f} | {thr[label]:.2f} | {mb} |")
    s1 = rows[1][2]
    overhead = statistics.median(s1) / statistics.median(d) - 1
    ratio = thr[rows[3][0]] / thr[rows[1][0]]
    print(f"\noverhead at concurrency 1 (p50 vs direct p50): {overhead:+.1%} (goal: within 10%: "
          f"{'met' if overhead <= 0.10 else 'NOT met'})")
    print(f"throughput at concurrency 8 / concurrency 1: {ratio:.2f}x (goal: >= 3x: {'met' if ratio >= 3 else 'NOT met'})")
    if vllm_rows:
        print_vllm(vllm_rows)


def print_vllm(rows: list[tuple]) -> None:
    print("\n| path | concurrency | requests | p50 s | p99 s | throughput req/s |\n|---|---|---|---|---|---|")
    for label, c, lat, wall in rows:
        print(f"| {label} | {c} | {len(lat)} | {_pct(lat, .5):.3f} | {_pct(lat, .99):.3f} | {len(lat) / wall:.2f} |")
    cost = statistics.median(rows[1][2]) / statistics.median(rows[0][2]) - 1
    print(f"\nSIF transformer in front of vLLM at concurrency 1 (p50 vs vLLM direct p50): {cost:+.1%} "
          f"(goal: <= 5%: {'met' if cost <= 0.05 else 'NOT met'})")


def _cpu_s(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def vllm_bench(model_dir: Path, tmp: Path, args: argparse.Namespace) -> list[tuple]:
    """vLLM direct and behind the SIF transformer, each at concurrency 1 (alternating), 4 and 8."""
    from sifthinker.serving.process import free_port, vllm_subprocess

    if args.vllm_url:
        return vllm_rows(args.vllm_url, args.vllm_name, tmp, args)
    with vllm_subprocess(args.vllm_env / "bin" / "python", model_dir, free_port(), tmp / "vllm.log",
                         args.vllm_name) as vurl:
        return vllm_rows(vurl, args.vllm_name, tmp, args)


def vllm_rows(vurl: str, name: str, tmp: Path, args: argparse.Namespace) -> list[tuple]:
    from sifthinker.serving.process import free_port, start_process, stop_process, wait_http

    port = free_port()
    cmd = [sys.executable, "-m", "sifthinker.cli", "serve", "--predictor-host", vurl, "--predictor-model", name,
           "--model_name", "bench", "--http_port", str(port), "--recipe", str(REPO / "recipes" / "local.yaml")]
    proc = start_process(cmd, tmp / "transformer.log")
    front = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{front}/v2/health/ready", proc, tmp / "transformer.log", timeout=300)
        through_server(vurl, name, 4, 2, args.max_tokens, route="", sif_prompt=True)  # warm-up
        through_server(front, "bench", 4, 2, args.max_tokens)
        direct, via, cpu = [], [], 0.0
        for _ in range(args.requests):
            direct += through_server(vurl, name, 1, 1, args.max_tokens, route="", sif_prompt=True)[0]
            c0 = _cpu_s(proc.pid)
            via += through_server(front, "bench", 1, 1, args.max_tokens)[0]
            cpu += _cpu_s(proc.pid) - c0
        # the transformer's own CPU time per request: what it adds, less sensitive to a shared box's load
        # than wall time
        print(f"SIF transformer CPU time per request at concurrency 1: {cpu / args.requests * 1000:.1f} ms")
        rows = [("vLLM OpenAI server, direct", 1, direct, sum(direct)),
                ("SIF transformer -> vLLM", 1, via, sum(via))]
        for c in (4, 8):
            n = args.requests * c // 2
            rows.append((f"vLLM OpenAI server, direct, concurrency {c}", c,
                         *through_server(vurl, name, n, c, args.max_tokens, route="", sif_prompt=True)))
            rows.append((f"SIF transformer -> vLLM, concurrency {c}", c,
                         *through_server(front, "bench", n, c, args.max_tokens)))
    finally:
        stop_process(proc)
    return rows


if __name__ == "__main__":
    main()
