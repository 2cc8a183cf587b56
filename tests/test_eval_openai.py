"""The OpenAI-compatible judge against a local fake endpoint (127.0.0.1, port 0) that injects 429s,
500s, timeouts, malformed JSON and unparseable answers."""
from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tarsier.evaluation.judges import JudgeAuthError, make_judge
from tarsier.evaluation.score_descriptions import score_file

DREAM = Path(__file__).resolve().parents[2] / "shared" / "dream1k"
if not DREAM.is_dir():
    DREAM = Path("/work/shared/dream1k")
REF = DREAM / "DREAM-1k.sample.jsonl"
KEY = "sk-test-THIS-IS-SECRET-0123456789"
STOP = {"a", "an", "the", "of", "to", "and", "in", "on", "at", "with", "is", "are", "was", "were", "their", "his",
        "her", "its", "then", "into"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if w not in STOP}


def fake_answer(messages: list[dict]) -> str:
    """A deterministic 'LLM': sentences as events; entailment = most content words present."""
    prompt = messages[0]["content"]
    if "Events:\n" in prompt:
        description = prompt.split("Description:\n", 1)[1].split("\n\nEvents:\n", 1)[0]
        block = prompt.split("\n\nEvents:\n", 1)[1].split("\n\nAnswer", 1)[0]
        events = re.findall(r"^\d+\. (.*)$", block, re.MULTILINE)
        have = _words(description)
        results = []
        for n, event in enumerate(events, 1):
            w = _words(event)
            label = "entailment" if w and len(w & have) / len(w) >= 0.6 else "neutral"
            results.append({"id": n, "label": label})
        return "Here you go:\n```json\n" + json.dumps({"results": results}) + "\n```"
    description = prompt.rsplit("Description:\n", 1)[1]
    events = [s.strip() for s in re.split(r"(?<=[.!?])\s+", description) if s.strip()][:10]
    # python-literal style with a trailing comma, to exercise the repairs
    return "{'events': [" + ", ".join(repr(e) for e in events) + ",]}"


class FakeServer:
    def __init__(self, mode: str = "good", delay: float = 1.0):
        self.mode = mode
        self.delay = delay
        self.requests = 0
        self.seen: dict[str, int] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length))
                auth = self.headers.get("Authorization", "")
                with server.lock:
                    server.requests += 1
                    h = hashlib.sha256(json.dumps(payload["messages"]).encode()).hexdigest()
                    n = server.seen.get(h, 0)
                    server.seen[h] = n + 1
                if server.mode == "auth" or auth != f"Bearer {KEY}":
                    return self._send(401, b'{"error": {"message": "Incorrect API key provided"}}')
                if server.mode == "down":
                    # a badly behaved server that echoes the credentials: they must be redacted
                    return self._send(500, json.dumps({"error": f"boom ({auth})"}).encode())
                if server.mode == "flaky" and n == 0:
                    kind = int(h[:8], 16) % 5
                    if kind == 0:
                        return self._send(429, b'{"error": "rate limited"}', {"Retry-After": "0"})
                    if kind == 1:
                        return self._send(500, b'{"error": "internal"}')
                    if kind == 2:
                        time.sleep(server.delay)      # longer than the client's timeout
                        return self._send(200, b"{}")
                    if kind == 3:
                        return self._send(200, b'{"choices": [{"message": {"content": "trunc')
                messages = payload["messages"]
                content = fake_answer(messages)
                if server.mode == "flaky" and len(messages) == 1 and int(h[8:16], 16) % 4 == 0:
                    content = "I think all the events are fine, no JSON needed."   # unparseable: re-asked
                body = {"choices": [{"message": {"role": "assistant", "content": content}}]}
                return self._send(200, json.dumps(body).encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _predictions(tmp_path: Path) -> Path:
    rows = [json.loads(line) for line in REF.read_text().splitlines() if line.strip()]
    path = tmp_path / "pred.jsonl"
    with path.open("w") as f:
        for i, r in enumerate(rows):
            own = r["text"]["response"]
            other = rows[(i + 3) % len(rows)]["text"]["response"]
            if r["idx"] == 3:
                continue   # a missing prediction
            text = own if i % 2 == 0 else other
            f.write(json.dumps({"video": f"videos/{r['idx']:06d}.mp4", "clip": 0, "description": text}) + "\n")
    return path


def _judge(server: FakeServer, cache: Path, **kw):
    opts = {"url": server.url, "api_key": KEY, "concurrency": 4, "timeout": 0.5, "max_retries": 4, "backoff": 0.01,
                "max_backoff": 0.05, "cache_path": str(cache)}
    opts.update(kw)
    return make_judge("openai:fake-judge", **opts)


def _scores(report: dict) -> dict:
    return {"overall": report["overall"], "categories": report["categories"], "buckets": report["buckets"]}


def test_flaky_endpoint_gives_same_results_and_cache_resumes(tmp_path, capsys):
    pred = _predictions(tmp_path)
    with FakeServer("good") as good:
        clean = score_file(pred, REF, _judge(good, tmp_path / "clean.sqlite"), tmp_path / "clean")
    assert clean.failed == 0
    assert clean.report["counts"]["missing"] == 1
    with FakeServer("flaky", delay=1.0) as flaky:
        judge = _judge(flaky, tmp_path / "flaky.sqlite")
        t0 = time.time()
        result = score_file(pred, REF, judge, tmp_path / "flaky")
        assert time.time() - t0 < 60
        assert result.failed == 0
        assert _scores(result.report) == _scores(clean.report)          # results stay correct
        assert judge.stats["parse_retries"] > 0                          # unparseable answers were re-asked
        assert flaky.requests > good.requests                            # the injected failures were retried
        sent = flaky.requests
        # a second run with the same cache sends zero requests and gives the same scores
        again = score_file(pred, REF, _judge(flaky, tmp_path / "flaky.sqlite"), tmp_path / "again")
        assert flaky.requests == sent
        assert _scores(again.report) == _scores(clean.report)
    # the key never reaches the cache, the reports or the logs
    out, err = capsys.readouterr()
    for path in [tmp_path / "flaky.sqlite", *(tmp_path / "flaky").iterdir(), *(tmp_path / "again").iterdir()]:
        assert KEY.encode() not in path.read_bytes(), path
    for side in (tmp_path / "flaky.sqlite-wal",):
        if side.exists():
            assert KEY.encode() not in side.read_bytes()
    assert KEY not in out + err
    assert KEY not in repr(judge)


def test_permanently_failing_endpoint_ends_with_failed_samples(tmp_path):
    pred = _predictions(tmp_path)
    with FakeServer("down") as down:
        judge = _judge(down, tmp_path / "c.sqlite", max_retries=2, max_consecutive_failures=3)
        t0 = time.time()
        result = score_file(pred, REF, judge, tmp_path / "out")
        elapsed = time.time() - t0
        # bounded: at most (3 failures in a row + calls in flight) x 3 attempts
        assert down.requests <= (3 + 4) * 3
    assert elapsed < 20
    counts = result.report["counts"]
    assert counts["failed"] == 19 and counts["missing"] == 1
    assert result.report["overall"]["recall"] is not None    # only the missing sample (recall 0) is left
    assert "looks down" in result.report["inputs"]["judge_failure"]
    assert KEY not in json.dumps(result.report)
    assert "***" in judge.errors[0] and KEY not in " ".join(judge.errors)
    for path in (tmp_path / "out").iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_unauthorised_fails_fast_with_clear_message(tmp_path):
    pred = _predictions(tmp_path)
    with FakeServer("auth") as server:
        judge = _judge(server, tmp_path / "c.sqlite")
        t0 = time.time()
        with pytest.raises(JudgeAuthError, match="refused the credentials"):
            score_file(pred, REF, judge, tmp_path / "out")
        assert time.time() - t0 < 5
        assert server.requests <= 4          # no retries: at most the calls already in flight


def test_cli_openai_judge_env_and_401(tmp_path, monkeypatch):
    from tarsier.cli.app import app

    pred = _predictions(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    runner = CliRunner()
    with FakeServer("good") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        result = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(REF), "--judge", "openai:fake-judge",
                                     "-o", str(tmp_path / "out"), "--cache", str(tmp_path / "c.sqlite"),
                                     "--concurrency", "3"])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["judge"]["name"] == "openai:fake-judge"
        assert report["judge"]["approximate"] is False
        assert KEY not in result.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-987654321")
    with FakeServer("good") as server:
        result = runner.invoke(app, ["eval", "autodq", str(pred), "--ref", str(REF), "--judge", "openai:fake-judge",
                                     "--judge-url", server.url, "-o", str(tmp_path / "out2"),
                                     "--cache", str(tmp_path / "c2.sqlite")])
        assert result.exit_code == 2
        assert "refused the credentials" in result.output
        assert "sk-wrong-key-987654321" not in result.output
