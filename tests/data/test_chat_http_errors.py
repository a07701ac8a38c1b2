"""An unreachable endpoint is named with its URL and what went wrong: refused, timed out or DNS (issue 22)."""

from __future__ import annotations

import socket

import pytest
import requests

from sifthinker.data.chat_http import connection_problem, post_chat
from sifthinker.evaluation.endpoint import EndpointError, EndpointGenerator
from sifthinker.serving.process import free_port


def _problem(url: str, timeout: float = 5.0) -> str:
    with pytest.raises(requests.RequestException) as e:
        requests.get(url, timeout=timeout)
    return connection_problem(e.value, url)


def test_refused_dns_and_timeout_are_told_apart():
    url = f"http://127.0.0.1:{free_port()}/openai/v1/models"
    assert _problem(url) == f"connection to 127.0.0.1:{url.split(':')[2].split('/')[0]} refused " \
                            f"(is the server running on that port?): {url}"
    assert _problem("http://no-such-host.invalid/v1").startswith("DNS lookup of 'no-such-host.invalid' failed")
    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        assert _problem(url, timeout=0.5) == f"127.0.0.1:{silent.getsockname()[1]} did not answer in time: {url}"


def test_eval_endpoint_and_chat_post_name_the_url():
    base = f"http://127.0.0.1:{free_port()}/openai/v1"
    with pytest.raises(EndpointError, match=rf"cannot reach the endpoint: connection to .* refused .*: {base}/models"):
        _ = EndpointGenerator(base).model
    reply = post_chat(requests.Session(), f"{base}/chat/completions", {}, timeout_s=5, retries=0, backoff_s=0)
    assert "refused" in reply.failed and reply.failed.endswith(f"{base}/chat/completions")
