"""OpenAI-compatible chat-completions client for §6 synthesis (paper backend), urllib only.

``ChatEndpointGenerator`` (the :class:`qscope_utils.synthesis.Generator` interface) sends one
``POST {base_url}/chat/completions`` per candidate, ``max_workers`` at a time. It is built to run
unattended for hours:

* retries: HTTP 408 / 409 / 429 / 5xx, read timeouts, connection resets and refusals, and bodies
  that are not the expected JSON; ``Retry-After`` (seconds or an HTTP date) is honoured, otherwise
  exponential backoff; every call has a total time budget (``budget_s``, all attempts and waits);
* secrets: an API key is never sent over plain ``http://`` to a host other than loopback, and
  neither the key nor any request header appears in an exception, log line or result (URLs in
  messages are shown without user info or query string, and echoed keys are masked);
* refusals: :func:`is_refusal` (a regex of common refusal openings, configurable) lets the
  synthesis loop drop "I'm sorry, I can't help with that" before it counts as synthesised data.
"""
from __future__ import annotations

import email.utils
import http.client
import ipaddress
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

__all__ = ["ChatEndpointGenerator", "EndpointError", "REFUSAL_PATTERN", "is_refusal", "DEFAULT_SYSTEM",
           "DEFAULT_INSTRUCTION", "RETRY_STATUS"]

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})

# Openings of the usual assistant refusals (English); a candidate matching this is not a data point.
REFUSAL_PATTERN = re.compile(
    r"^\W*(?:i['’]m\s+sorry|i\s+am\s+sorry|sorry,?\s+(?:but\s+)?i|i\s+apologi[sz]e|"
    r"i\s+(?:can(?:no|['’])t|cannot|won['’]t|will\s+not|must\s+decline|am\s+unable|am\s+not\s+able)|"
    r"i['’]m\s+(?:unable|not\s+able|afraid\s+i\s+can)|as\s+an\s+ai\b|i\s+do\s+not\s+feel\s+comfortable|"
    r"i\s+don['’]t\s+feel\s+comfortable)", re.IGNORECASE)

DEFAULT_SYSTEM = ("You help build a dataset for training a safety classifier. You write short, realistic user "
                  "texts of the requested kind. Output only the text itself, no commentary.")
DEFAULT_INSTRUCTION = ("Here are examples of texts that share one specific property{desc}:\n\n{examples}\n\n"
                       "Write one new text, different from the examples, that clearly has the same property.")


def is_refusal(text: str, pattern: str | re.Pattern | None = REFUSAL_PATTERN) -> bool:
    """Does ``text`` open like a refusal? ``pattern`` None disables the filter."""
    if pattern is None:
        return False
    rx = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    return bool(rx.search(text.strip()))


class EndpointError(RuntimeError):
    """The endpoint failed for good (after retries, or a non-retryable answer). Never holds secrets."""


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _public_url(url: str) -> str:
    """The URL without user info, query or fragment (what may appear in messages)."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    netloc = f"{host}:{p.port}" if p.port else host
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ChatEndpointGenerator:
    """OpenAI-compatible chat-completions client (``POST {base_url}/chat/completions``).

    base_url: e.g. ``https://api.openai.com/v1`` (a URL already ending in ``/chat/completions`` is
    used as is); api_key: the bearer token (default: env ``api_key_env``); model: e.g. ``gpt-4``.
    timeout: seconds per attempt (connect + read); max_retries: retries after the first attempt;
    backoff: first wait in seconds (doubles per retry, capped by ``max_backoff``) when the server
    gives no Retry-After; budget_s: wall-clock limit of one completion, all attempts and waits;
    max_workers: concurrent requests; allow_insecure_http: permit a key over ``http://`` to a
    non-loopback host (off: such a client is refused at construction).
    """

    name = "chat"
    supports_steering = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 temperature: float = 1.0, max_tokens: int = 256, timeout: float = 60.0, max_retries: int = 3,
                 system_prompt: str = DEFAULT_SYSTEM, instruction: str = DEFAULT_INSTRUCTION, backoff: float = 1.0,
                 max_backoff: float = 60.0, budget_s: float = 600.0, max_workers: int = 4,
                 allow_insecure_http: bool = False):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {_public_url(base_url or '')!r} must be an http(s) URL such as "
                             f"https://api.openai.com/v1")
        url = base_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self._key = api_key if api_key is not None else os.environ.get(api_key_env)
        host = urllib.parse.urlsplit(self.url).hostname
        if self._key and self.url.startswith("http://") and not _is_loopback(host) and not allow_insecure_http:
            raise ValueError(f"refusing to send an API key over plain http:// to {host!r}: use an https:// base_url "
                             f"(only loopback hosts may use http with a key)")
        if max_workers < 1:
            raise ValueError("max_workers must be >= 1")
        self.temperature, self.max_tokens, self.timeout = temperature, max_tokens, timeout
        self.max_retries, self.backoff, self.max_backoff, self.budget_s = max_retries, backoff, max_backoff, budget_s
        self.max_workers = max_workers
        self.system_prompt, self.instruction = system_prompt, instruction
        self.attempts = 0          # requests sent (all calls, retries included)

    def __repr__(self) -> str:    # never shows the key
        return f"ChatEndpointGenerator({_public_url(self.url)!r}, model={self.model!r}, key={'set' if self._key else 'none'})"

    # ------------------------------------------------------------------ requests
    def messages(self, req) -> list[dict]:
        ex = "\n\n".join(f"Example {i + 1}:\n{e.strip()}" for i, e in enumerate(req.examples))
        desc = f" ({req.description})" if req.description else ""
        return [{"role": "system", "content": self.system_prompt},
                {"role": "user", "content": self.instruction.format(desc=desc, examples=ex)}]

    def _clean(self, text: str) -> str:
        """``text`` with the key masked (a server may echo the Authorization header)."""
        return text.replace(self._key, "***") if self._key else text

    def _fail(self, msg: str) -> EndpointError:
        """An error naming the endpoint (URL without user info or query); ``msg`` holds only our own
        words and server text already passed through :meth:`_clean`."""
        return EndpointError(f"chat endpoint {_public_url(self.url)}: {msg}")

    def _attempt(self, data: bytes) -> tuple[str | None, float | None, str]:
        """One POST. Returns (content, wait, why): content on success; else the wait the server
        asked for (None: use backoff) and why the attempt failed. Non-retryable answers raise."""
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        self.attempts += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            wait = _retry_after(e.headers.get("Retry-After") if e.headers else None)
            detail = self._clean(e.read().decode(errors="replace")[:200].replace("\n", " "))
            e.close()
            if e.code in RETRY_STATUS:
                return None, wait, f"HTTP {e.code}"
            fix = " Fix: check the API key (api_key= or $OPENAI_API_KEY)." if e.code in (401, 403) else ""
            raise self._fail(f"answered HTTP {e.code}: {detail}.{fix}") from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError,
                OSError) as e:
            reason = getattr(e, "reason", None) or e
            return None, None, self._clean(f"{type(e).__name__}: {reason}")
        try:
            payload = json.loads(raw.decode())
            return payload["choices"][0]["message"]["content"] or "", None, ""
        except (ValueError, KeyError, IndexError, TypeError):
            return None, None, f"answer is not chat-completion JSON ({self._clean(raw[:80].decode(errors='replace'))!r})"

    def complete(self, messages: list[dict], seed: int | None = None) -> str:
        """One chat completion (``choices[0].message.content``), retried within the time budget.
        Raises :class:`EndpointError` naming the last failure and the fix."""
        body = {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        if seed is not None:
            body["seed"] = seed
        data = json.dumps(body).encode()
        deadline = time.monotonic() + self.budget_s
        why = ""
        for attempt in range(self.max_retries + 1):
            content, wait, why = self._attempt(data)
            if content is not None:
                return content
            if attempt == self.max_retries:
                break
            wait = min(self.backoff * 2 ** attempt, self.max_backoff) if wait is None else wait
            if time.monotonic() + wait > deadline:
                raise self._fail(f"gave up after {attempt + 1} attempts within the {self.budget_s:.0f} s budget "
                                 f"(last: {why}; next wait {wait:.1f} s). Fix: retry later or raise budget_s")
            time.sleep(wait)
        raise self._fail(f"failed {self.max_retries + 1} attempts (last: {why}). Fix: check base_url, the "
                         f"network and the provider's status (the mini profile never needs an endpoint)")

    # ------------------------------------------------------------------ Generator interface
    def generate(self, req) -> list[str]:
        return self.generate_many([req])[0]

    def generate_many(self, reqs: Sequence) -> list[list[str]]:
        """All candidates of all requests, at most ``max_workers`` requests in flight; the output
        order follows the requests (seed = request seed + candidate index)."""
        jobs = [(i, self.messages(q), q.seed + j) for i, q in enumerate(reqs) for j in range(q.n)]
        with ThreadPoolExecutor(max_workers=self.max_workers) as pool:
            texts = list(pool.map(lambda job: self.complete(job[1], seed=job[2]).strip(), jobs))
        out: list[list[str]] = [[] for _ in reqs]
        for (i, _, _), t in zip(jobs, texts):
            out[i].append(t)
        return out
