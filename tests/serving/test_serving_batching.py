"""Dynamic batching: batched generation equals unbatched greedy generation, row by row (in process and through
the real server), rows end on their own (max_tokens, cancellation, deadline) without disturbing the others."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from sifthinker.serving import openai_api as oa
from sifthinker.serving.batcher import Batcher, Job, collate
from sifthinker.serving.errors import RequestError

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = ["Which is closer, the red cube or the blue sphere?", "How many cubes?",
             "Is the green cylinder left of the small yellow sphere behind the large red cube?", "Red?"]


def _image(seed: int, size=(64, 48)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def local_model(tiny_model_dir):
    from sifthinker.config.run_config import RunConfig
    from sifthinker.model import load_model

    return load_model(tiny_model_dir, RunConfig.load(REPO / "recipes" / "local.yaml"))


def _requests():
    from sifthinker.model import GenRequest

    reqs = [(GenRequest(_image(i), _image(100 + i), q), mt) for i, (q, mt) in
            enumerate(zip(QUESTIONS, [12, 5, 9, 1], strict=True))]
    # a two-image item (more image tokens) and a differently sized image in the same batch
    reqs.append((GenRequest(_image(7), _image(107), QUESTIONS[0], (_image(8),), (_image(108),)), 10))
    reqs.append((GenRequest(_image(9, (80, 40)), _image(109, (80, 40)), QUESTIONS[2]), 12))
    return reqs


def test_collate_is_the_processors_own_batch(local_model):
    from sifthinker.model.inference import build_inputs

    _, processor = local_model
    reqs = [r for r, _ in _requests()]
    rows = [dict(build_inputs(processor, [r])) for r in reqs]
    together = build_inputs(processor, reqs)
    mine = collate(rows, processor.tokenizer.pad_token_id)
    assert set(mine) == set(together)
    assert len({r["input_ids"].shape[1] for r in rows}) > 2  # the rows really needed padding
    for k in together:
        assert mine[k].shape == together[k].shape and bool((mine[k] == together[k]).all()), k


def _run_jobs(batcher: Batcher, model_inputs, specs, cancel_after=None):
    """Submit jobs together; returns their outcomes (Result or exception) in order."""

    async def main():
        loop = asyncio.get_running_loop()
        jobs = []
        for inputs, mt, deadline in specs:
            jobs.append(Job(inputs, int(inputs["input_ids"].shape[1]), mt, 0.0, deadline, loop))
        left = [len(jobs)]
        batcher.incoming = lambda: left[0]
        for j in jobs:
            left[0] -= 1
            batcher.submit(j)
        if cancel_after is not None:
            idx, seconds = cancel_after
            await asyncio.sleep(seconds)
            jobs[idx].cancel("client disconnected")
        return await asyncio.gather(*(j.future for j in jobs), return_exceptions=True), jobs

    return asyncio.run(main())


def test_batched_generation_equals_unbatched_greedy(local_model):
    from sifthinker.model import generate
    from sifthinker.model.inference import build_inputs

    model, processor = local_model
    reqs = _requests()
    expected = [generate(model, processor, [r], mt)[0] for r, mt in reqs]  # one at a time
    assert len(set(expected)) > 1 and all(expected)
    batcher = Batcher(model, processor, max_batch_size=8, max_wait_s=1.0)
    far = time.monotonic() + 600
    outcomes, jobs = _run_jobs(batcher, None, [(dict(build_inputs(processor, [r])), mt, far) for r, mt in reqs])
    batcher.close()
    assert [o.text for o in outcomes] == expected
    assert [o.batch_size for o in outcomes] == [len(reqs)] * len(reqs)  # one batch
    assert [o.completion_tokens for o in outcomes] == [len(j.tokens) for j in jobs]
    assert all(o.completion_tokens <= mt for o, (_, mt) in zip(outcomes, reqs, strict=True))
    assert outcomes[3].completion_tokens == 1 and outcomes[3].finish_reason in ("length", "stop")


def test_cancelled_and_expired_rows_end_alone(local_model):
    from sifthinker.model import GenRequest, generate
    from sifthinker.model.inference import build_inputs

    model, processor = local_model
    reqs = [GenRequest(_image(i), _image(50 + i), QUESTIONS[i]) for i in range(3)]
    inputs = [dict(build_inputs(processor, [r])) for r in reqs]
    batcher = Batcher(model, processor, max_batch_size=8, max_wait_s=1.0)
    now = time.monotonic()
    # row 0 runs 400 tokens but is cancelled after 0.3 s; row 1 is past its deadline after 0.2 s
    specs = [(inputs[0], 400, now + 600), (inputs[1], 400, now + 0.2), (inputs[2], 30, now + 600)]
    t0 = time.monotonic()
    outcomes, jobs = _run_jobs(batcher, None, specs, cancel_after=(0, 0.3))
    took = time.monotonic() - t0
    batcher.close()
    assert isinstance(outcomes[0], RequestError) and outcomes[0].status == 499
    assert isinstance(outcomes[1], RequestError) and outcomes[1].status == 408
    assert outcomes[1].limit == "request_timeout_s" and "serving.request_timeout_s" in outcomes[1].message
    assert outcomes[2].text == generate(model, processor, [reqs[2]], 30)[0]
    assert len(jobs[0].tokens) < 400 and len(jobs[1].tokens) < 400  # stopped early
    assert took < 30  # not 400 tokens' worth of a batch (a hang guard: the tiny model does ~200 tokens/s)


def test_a_closed_batcher_cancels_running_rows_and_refuses_new_jobs(local_model):
    from sifthinker.model import GenRequest
    from sifthinker.model.inference import build_inputs

    model, processor = local_model
    inputs = dict(build_inputs(processor, [GenRequest(_image(0), _image(1), QUESTIONS[0])]))
    batcher = Batcher(model, processor, max_batch_size=2, max_wait_s=0.0)

    async def main():
        loop = asyncio.get_running_loop()
        job = Job(inputs, 1, 2000, 0.0, time.monotonic() + 600, loop)
        batcher.submit(job)
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        batcher.close()  # what the server does on SIGTERM
        with pytest.raises(RequestError) as ei:
            await job.future
        assert ei.value.status == 503 and time.monotonic() - t0 < 5
        with pytest.raises(RequestError, match="shutting down"):
            batcher.submit(Job(inputs, 1, 5, 0.0, time.monotonic() + 600, loop))
        return job

    job = asyncio.run(main())
    assert 0 < len(job.tokens) < 2000


def test_concurrent_requests_to_the_server_are_batched_and_equal_direct_generation(serving_server, local_model):
    from prometheus_client.parser import text_string_to_metric_families

    from sifthinker.model import GenRequest, generate

    def batches():
        text = requests.get(f"{serving_server.url}/metrics", timeout=30).text
        s = {x.name: x.value for f in text_string_to_metric_families(text) for x in f.samples}
        return s["sifthinker_batch_size_count"], s["sifthinker_batch_size_sum"]

    cases = [(QUESTIONS[i % 4], _image(i), _image(200 + i), 6 + i) for i in range(8)]
    expected = [generate(*local_model, [GenRequest(im, d, q)], mt)[0] for q, im, d, mt in cases]
    before = batches()

    def ask(case):
        q, im, d, mt = case
        body = oa.chat_request_body(q, im, d, serving_server.model_name, max_tokens=mt)
        r = requests.post(f"{serving_server.url}/openai/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, cases))
    assert got == expected
    after = batches()
    n_batches, n_rows = after[0] - before[0], after[1] - before[1]
    assert n_rows == 8 and n_batches < 8  # at least two requests shared a batch
