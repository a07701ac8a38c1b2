"""The LLM judge (sifthinker.rewards.judge) against a real local HTTP server standing in for the judge endpoint.

The stand-in speaks the OpenAI chat-completions protocol on 127.0.0.1 and can answer well, slowly,
with HTTP 500, with garbage, or without a score; it records every request and the most requests it had
in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from sifthinker.config.run_config import RunConfig
from sifthinker.method.answers import JudgeUnavailable
from sifthinker.rewards.judge import JUDGE_SYSTEM_PROMPT, OpenAIJudge, judge_from_config, parse_judge_score
from sifthinker.rewards.reward_funcs import make_answer_reward


class StandInJudge:
    """A chat-completions server whose replies follow ``mode`` (or ``script``, one mode per request)."""

    def __init__(self) -> None:
        self.mode, self.script, self.delay = "ok", [], 0.0
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge._lock:
                    judge.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                    mode = judge.script.pop(0) if judge.script else judge.mode
                    judge.in_flight += 1
                    judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
                try:
                    judge.reply(self, mode, body)
                finally:
                    with judge._lock:
                        judge.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, handler: BaseHTTPRequestHandler, mode: str, body: dict) -> None:
        if mode == "slow":
            time.sleep(1.0)
        time.sleep(self.delay)
        if mode == "500":
            handler.send_response(500)
            handler.end_headers()
            return
        if mode == "garbage":
            payload = b"<html>upstream exploded"
        else:
            user = body["messages"][-1]["content"]
            standard = re.search(r"Standard answer: (.*)\n", user).group(1)
            answer = re.search(r"Model's answer: (.*)$", user).group(1)
            content = ("I cannot judge this." if mode == "noscore" else
                       f'```json\n{{"score": {1.0 if answer.lower() == standard.lower() else 0.25}}}\n```')
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    server = StandInJudge()
    yield server
    server.close()


def _judge(server: StandInJudge, **kw) -> OpenAIJudge:
    return OpenAIJudge(server.url, "judge-model", kw.pop("api_key", "k"), backoff_s=0.01, **kw)


def test_prompt_score_parsing_and_cache(stand_in):
    judge = _judge(stand_in)
    assert judge.score("What does the cat do?", "It sleeps", "it sleeps") == 1.0
    assert judge.score("What does the cat do?", "It sleeps", "it sleeps") == 1.0  # cached
    assert judge.score("What does the cat do?", "It eats", "it sleeps") == 0.25
    assert len(stand_in.requests) == 2 and judge.cache_hits == 1 and judge.failures == 0
    req = stand_in.requests[0]
    assert req["path"] == "/v1/chat/completions" and req["auth"] == "Bearer k" and req["model"] == "judge-model"
    assert req["messages"][0] == {"role": "system", "content": JUDGE_SYSTEM_PROMPT}
    assert JUDGE_SYSTEM_PROMPT.startswith("You are responsible for proofreading the answers")
    assert '{"score": 0.8}' in JUDGE_SYSTEM_PROMPT
    assert req["messages"][1]["content"] == (
        "Question: What does the cat do?\nStandard answer: it sleeps\nModel's answer: It sleeps")
    # The cache key is (question, GT, answer): another question is another request.
    judge.score("What does the dog do?", "It sleeps", "it sleeps")
    assert len(stand_in.requests) == 3
    # No answer never reaches the endpoint.
    assert judge.score("q", None, "x") == 0.0 and judge.score("q", "  ", "x") == 0.0
    assert len(stand_in.requests) == 3


def test_batches_dedup_and_bound_concurrency(stand_in):
    stand_in.delay = 0.2
    judge = _judge(stand_in, max_concurrency=3)
    items = [("q", f"answer {i}", "answer 0") for i in range(8)] + [("q", "answer 1", "answer 0")] * 4
    t0 = time.monotonic()
    scores = judge.score_batch(items)
    assert scores == [1.0] + [0.25] * 11
    assert len(stand_in.requests) == 8  # the 4 repeats cost nothing
    assert stand_in.max_in_flight == 3  # bounded, and actually concurrent
    assert time.monotonic() - t0 < 8 * 0.2  # faster than one at a time


def test_slow_judge_times_out_scores_zero_and_is_counted(stand_in):
    stand_in.mode = "slow"  # 1 s per reply, the timeout is 0.2 s
    judge = _judge(stand_in, timeout=0.2, retries=1)
    t0 = time.monotonic()
    assert judge.score("q", "a", "a") == 0.0
    assert time.monotonic() - t0 < 1.0  # two timed-out attempts, not two full replies
    assert judge.failures == 1 and len(stand_in.requests) == 2
    stand_in.mode = "ok"
    assert judge.score("q", "a", "a") == 1.0  # the failure was not cached


def test_failing_and_garbage_replies_are_retried_then_counted(stand_in):
    judge = _judge(stand_in, retries=2)
    stand_in.script = ["500", "garbage"]  # then ok: a flaky endpoint recovers within the retries
    assert judge.score("q", "a", "a") == 1.0 and len(stand_in.requests) == 3 and judge.failures == 0
    for mode in ("500", "garbage", "noscore"):
        stand_in.mode, stand_in.requests = mode, []
        assert judge.score("q", f"a {mode}", "a") == 0.0, mode
        assert len(stand_in.requests) == 3, mode  # 1 + 2 retries
    assert judge.failures == 3


def test_stop_policy_ends_the_run(stand_in):
    stand_in.mode = "500"
    judge = _judge(stand_in, retries=0, on_error="stop")
    with pytest.raises(JudgeUnavailable, match="on_error is 'stop'"):
        judge.score("q", "a", "a")
    # Through the answer reward too: the run stops instead of training on zeros.
    reward = make_answer_reward(judge=judge)
    with pytest.raises(JudgeUnavailable):
        reward(["<answer>a cat</answer>"], response=["a cat"], answer_type=["free"], problem=["q"])


def test_down_judge_zero_policy_through_the_answer_reward():
    """An endpoint nobody listens on: free answers score 0, counted; closed-form answers never ask it."""
    judge = OpenAIJudge("http://127.0.0.1:9/v1", "m", timeout=0.5, retries=0)
    logged: list[tuple[str, float]] = []
    comps = ["<answer>the cat sleeps</answer>", "<answer>yes</answer>", "<answer>3</answer>"]
    kw = {"response": ["the cat sleeps", "yes", "three"], "answer_type": ["free", "yes_no", "number"],
          "problem": ["q1", "q2", "q3"]}
    reward = make_answer_reward(judge=judge)
    assert reward(comps, **kw, log_metric=lambda k, v: logged.append((k, v))) == [0.0, 1.0, 1.0]
    assert logged == [("judge/answers", 1.0), ("judge/failures", 1.0)] and judge.failures == 1


def test_verifier_first_then_judge(stand_in):
    judge = _judge(stand_in)
    comps = ["<answer>It sleeps</answer>", "<answer>no</answer>", "<answer>B</answer>"]
    kw = {"response": ["it sleeps", "yes", "B"], "answer_type": ["free", "yes_no", "option"],
          "problem": ["What does the cat do?", "q", "q"]}
    assert make_answer_reward(judge=judge)(comps, **kw) == [1.0, 0.0, 1.0]
    assert len(stand_in.requests) == 1  # only the free-form answer


def test_judge_from_the_recipe(stand_in, monkeypatch):
    cfg = RunConfig.from_dict({"grpo": {"judge": {"base_url": stand_in.url, "model": "qwen-judge",
                                                  "api_key_env": "JUDGE_KEY", "timeout_s": 5, "retries": 1,
                                                  "max_concurrency": 2, "on_error": "stop"}}})
    monkeypatch.setenv("JUDGE_KEY", "secret")
    judge = judge_from_config(cfg.grpo.judge)
    assert (judge.model, judge.timeout, judge.retries, judge.max_concurrency, judge.on_error) == (
        "qwen-judge", 5.0, 1, 2, "stop")
    assert judge.score("q", "x", "x") == 1.0 and stand_in.requests[-1]["auth"] == "Bearer secret"
    assert judge_from_config(RunConfig().grpo.judge) is None  # no judge unless the recipe names one


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"score": 1}', 1.0), ('Sure. {"score": 0.5} done', 0.5), ('```json\n{"score": 0.25}\n```', 0.25),
    ('{"score": 7}', 1.0), ("score: 0.8", 0.8), ("no idea", None), ('{"score": "high"}', None), ("", None)])
def test_parse_judge_score(reply, expected):
    assert parse_judge_score(reply) == expected
