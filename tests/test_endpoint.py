"""The §6 chat-endpoint client against a loopback server (127.0.0.1 only) that times out, resets
connections, returns garbage, rate-limits with Retry-After and refuses; the key never leaks."""
from __future__ import annotations

import json
import socket
import struct
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import scipy.sparse as sp

from qscope_utils import synthesis as Y
from qscope_utils.endpoint import ChatEndpointGenerator, EndpointError, is_refusal

KEY = "sk-SECRET-0123456789"


class _Server(BaseHTTPRequestHandler):
    script: list = []          # actions consumed one per request; "ok" when empty
    log: list = []
    lock = threading.Lock()
    inflight = 0
    max_inflight = 0
    delay = 0.0

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])).decode())
        with _Server.lock:
            action = _Server.script.pop(0) if _Server.script else "ok"
            _Server.log.append({"action": action, "auth": self.headers.get("Authorization"), "body": body})
            _Server.inflight += 1
            _Server.max_inflight = max(_Server.max_inflight, _Server.inflight)
        try:
            self._act(action, body)
        finally:
            with _Server.lock:
                _Server.inflight -= 1

    def _act(self, action, body):
        if action == "timeout":
            time.sleep(1.0)                       # longer than the client's read timeout
            return
        if action == "reset":                     # RST instead of an answer
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.request.close()
            return
        if action.startswith("status:"):          # e.g. status:429:2 (Retry-After 2 s) or status:503
            _, code, *after = action.split(":")
            self.send_response(int(code))
            if after:
                self.send_header("Retry-After", after[0])
            self.end_headers()
            # a careless server echoing the request's Authorization header
            self.wfile.write(json.dumps({"error": "nope", "saw": self.headers.get("Authorization")}).encode())
            return
        if action == "garbage":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>upstream proxy error</html>")
            return
        time.sleep(_Server.delay)
        text = ("I'm sorry, but I can't help with that." if action == "refuse"
                else f"synthetic text seed {body.get('seed')}")
        out = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(out.encode())

    def log_message(self, *a):
        pass


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    srv.daemon_threads = True
    _Server.script, _Server.log, _Server.inflight, _Server.max_inflight, _Server.delay = [], [], 0, 0, 0.0
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def _client(url, **kw):
    kw = {"api_key": KEY, "timeout": 0.3, "backoff": 0.01, "max_retries": 3, "budget_s": 20.0, **kw}
    return ChatEndpointGenerator(url, "m", **kw)


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)) + repr(exc)


def test_retries_timeouts_resets_garbage_and_5xx_then_succeeds(server):
    gen = _client(server, max_retries=4)
    _Server.script = ["timeout", "reset", "garbage", "status:503"]
    assert gen.complete([{"role": "user", "content": "x"}], seed=7) == "synthetic text seed 7"
    assert [r["action"] for r in _Server.log] == ["timeout", "reset", "garbage", "status:503", "ok"]
    assert gen.attempts == 5 and all(r["auth"] == f"Bearer {KEY}" for r in _Server.log)


def test_gives_up_after_max_retries_without_leaking_the_key(server):
    gen = _client(server, max_retries=2)
    _Server.script = ["status:502", "garbage", "reset"]
    with pytest.raises(EndpointError, match="failed 3 attempts") as ei:
        gen.complete([{"role": "user", "content": "x"}])
    assert len(_Server.log) == 3
    assert KEY not in _all_text(ei.value) and "Authorization" not in _all_text(ei.value)
    _Server.script = ["status:400"]           # not retryable; the server echoes the key in its body
    with pytest.raises(EndpointError, match="HTTP 400") as ei:
        gen.complete([{"role": "user", "content": "x"}])
    assert KEY not in _all_text(ei.value) and "***" in str(ei.value)
    _Server.script = ["status:401"]
    with pytest.raises(EndpointError, match="API key") as ei:
        gen.complete([{"role": "user", "content": "x"}])
    assert KEY not in _all_text(ei.value) and KEY not in repr(gen)


def test_retry_after_is_honoured_and_the_budget_bounds_the_wait(server):
    gen = _client(server)
    _Server.script = ["status:429:1"]
    t = time.monotonic()
    assert gen.complete([{"role": "user", "content": "x"}], seed=1).startswith("synthetic")
    assert time.monotonic() - t >= 0.95        # waited the server's 1 s, not the 0.01 s backoff
    _Server.script = ["status:429:3600"]
    gen = _client(server, budget_s=2.0)
    t = time.monotonic()
    with pytest.raises(EndpointError, match="budget"):
        gen.complete([{"role": "user", "content": "x"}])
    assert time.monotonic() - t < 1.5 and len(_Server.log) == 3   # gave up at once instead of sleeping an hour


def test_plain_http_key_only_to_loopback():
    with pytest.raises(ValueError, match="https") as ei:
        ChatEndpointGenerator("http://api.example.com/v1", "m", api_key=KEY)
    assert KEY not in _all_text(ei.value)
    ChatEndpointGenerator("http://api.example.com/v1", "m", api_key="")            # no key: allowed
    ChatEndpointGenerator("https://api.example.com/v1", "m", api_key=KEY)
    ChatEndpointGenerator("http://localhost:8000/v1", "m", api_key=KEY)
    ChatEndpointGenerator("http://[::1]:8000/v1", "m", api_key=KEY)
    with pytest.raises(ValueError, match="http"):
        ChatEndpointGenerator("api.openai.com", "m")


def test_concurrency_is_bounded_and_order_kept(server):
    _Server.delay = 0.15
    gen = _client(server, max_workers=3, timeout=5.0)
    reqs = [Y.GenRequest(["e"], n=3, seed=100 * i) for i in range(3)]
    out = gen.generate_many(reqs)
    assert out == [[f"synthetic text seed {100 * i + j}" for j in range(3)] for i in range(3)]
    assert _Server.max_inflight == 3


def test_refusal_filter_known_answers():
    for t in ["I'm sorry, but I can't help with that.", "I cannot assist with this request.",
              "  As an AI language model, I won't", "Sorry, I can't write that.", "I must decline."]:
        assert is_refusal(t), t
    for t in ["How do I pick a lock?", "Write an insult about my neighbour", "Sorry state of affairs here, huh",
              "I can help you with that: first, ..."]:
        assert not is_refusal(t), t
    assert not is_refusal("I'm sorry to hear that", None)                     # filter disabled
    assert is_refusal("NOPE. not doing it", r"^nope\b")                        # configurable pattern


def test_refusals_are_dropped_before_they_count_as_synthesised(server):
    gen = _client(server, max_workers=2, timeout=5.0)
    _Server.script = ["refuse", "refuse"]
    seen = []

    def encode(texts):
        seen.extend(texts)
        return sp.csr_matrix(np.ones((len(texts), 4), dtype=np.float32))      # everything would "fire"

    res = Y.feature_synthesis(gen, encode, [2], {2: ["seed example"]}, budget=4, n_candidates=4, progress=False)
    assert res.log[0]["refusal"] == 2 and res.log[0]["generated"] == 4
    assert len(res.texts) == 2 and not any(is_refusal(t) for t in res.texts)
    assert not any(is_refusal(t) for t in seen)        # refusals never reach the encoder
    _Server.script = ["refuse"] * 4
    res = Y.feature_synthesis(gen, encode, [2], {2: ["seed example"]}, budget=4, n_candidates=4, progress=False,
                              refusal=None)             # filter off: the refusal (deduplicated) is kept
    assert res.texts == ["I'm sorry, but I can't help with that."]
