"""On-disk cache of judge calls: SQLite, keyed by judge name, prompt-template hash and the exact
conversation text. An interrupted or repeated evaluation resumes without paying twice.

Only the conversation (prompt texts) and the judge's answer are stored: never credentials,
headers or URLs. Every answer is committed as soon as it arrives.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path

from tarsier.common.files import home_dir


def default_cache_path() -> Path:
    return home_dir() / "judge_cache.sqlite"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                "template TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL, "
                "created REAL DEFAULT (julianday('now')))")
            self._db.commit()

    @staticmethod
    def key(judge: str, template_hash: str, request: str) -> str:
        return text_hash(json.dumps([judge, template_hash, request], ensure_ascii=False))

    def get(self, judge: str, template_hash: str, request: str) -> str | None:
        k = self.key(judge, template_hash, request)
        with self._lock:
            row = self._db.execute("SELECT response FROM calls WHERE key = ?", (k,)).fetchone()
        return row[0] if row else None

    def put(self, judge: str, template_hash: str, request: str, response: str) -> None:
        k = self.key(judge, template_hash, request)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO calls (key, judge, template, request, response) VALUES (?, ?, ?, ?, ?)",
                (k, judge, template_hash, request, response))
            self._db.commit()

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
