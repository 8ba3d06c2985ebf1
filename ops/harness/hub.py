"""A stand-in Hugging Face hub on loopback, for `svdq models pull` and the worker's first load without the internet:
the three parts of the hub's HTTP API that huggingface_hub's snapshot_download uses (a revision's info, the repo's
file tree, each file's resolve URL, HEAD and GET), for repositories held in memory. Point HF_ENDPOINT (or
snapshot_download's `endpoint`) at `url`. It keeps every request, and a gated file's GET waits until the test
opens its gate, so a test can hold a download mid-way."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlparse


@dataclass
class Gate:
    """Holds GETs of one file: `reached` is set when one arrives, the answer goes out once `opened` is set."""

    reached: threading.Event = field(default_factory=threading.Event)
    opened: threading.Event = field(default_factory=threading.Event)


class StandInHub:
    def __init__(self) -> None:
        self.commits: dict[str, dict[str, dict[str, bytes]]] = {}  # repo -> commit -> path -> bytes
        self.refs: dict[str, dict[str, str]] = {}  # repo -> branch or tag -> commit
        self.gates: dict[str, Gate] = {}  # file path -> its gate
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                outer._answer(self, head=False)

            def do_HEAD(self) -> None:
                outer._answer(self, head=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, repo_id: str, files: dict[str, bytes], *, ref: str = "main") -> str:
        """A commit of these files, which `ref` then names; its 40-hex id."""
        # the hub's ids are git's: sha1
        digest = hashlib.sha1(repo_id.encode(), usedforsecurity=False)
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + hashlib.sha1(files[path], usedforsecurity=False).digest())
        commit = digest.hexdigest()
        self.commits.setdefault(repo_id, {})[commit] = dict(files)
        self.refs.setdefault(repo_id, {})[ref] = commit
        return commit

    def gate(self, path: str) -> Gate:
        self.gates[path] = Gate()
        return self.gates[path]

    def got(self, method: str, fragment: str) -> list[str]:
        """The paths of the requests so far with this method whose path holds `fragment`."""
        with self._lock:
            return [p for m, p in self.requests if m == method and fragment in p]

    def __enter__(self) -> StandInHub:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for gate in self.gates.values():
            gate.opened.set()
        self.server.shutdown()
        self.server.server_close()

    def _resolve(self, repo_id: str, revision: str) -> str | None:
        if revision in self.commits.get(repo_id, {}):
            return revision
        return self.refs.get(repo_id, {}).get(revision)

    def _split(self, rest: str) -> tuple[str, str, str]:
        """`org/name/<kind>/<revision>/<path>` -> (repo, revision, path)."""
        org, name, _, revision, *path = rest.split("/")
        return f"{org}/{name}", unquote(revision), "/".join(path)

    def _answer(self, h: BaseHTTPRequestHandler, *, head: bool) -> None:
        path = urlparse(h.path).path
        with self._lock:
            self.requests.append((h.command, path))
        body, headers, status = b"", {}, 404
        if path.startswith("/api/models/"):
            repo, revision, _ = self._split(path.removeprefix("/api/models/"))
            commit = self._resolve(repo, revision)
            if repo not in self.commits:
                headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
            elif commit is None:
                headers = {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"}
            else:
                files = self.commits[repo][commit]
                if "/revision/" in path:
                    answer: object = {"id": repo, "sha": commit, "siblings": [{"rfilename": f} for f in files]}
                else:  # the recursive tree
                    answer = [{"type": "file", "path": f, "size": len(b),
                               "oid": hashlib.sha1(b, usedforsecurity=False).hexdigest()} for f, b in files.items()]
                body, headers, status = json.dumps(answer).encode(), {"Content-Type": "application/json"}, 200
        elif "/resolve/" in path:
            repo, revision, name = self._split(path.lstrip("/"))
            commit = self._resolve(repo, revision)
            data = self.commits.get(repo, {}).get(commit or "", {}).get(name)
            if data is None:
                headers = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
            else:
                gate = self.gates.get(name)
                if gate is not None and not head:
                    gate.reached.set()
                    gate.opened.wait(60)
                assert commit is not None
                body, status = data, 200
                headers = {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        h.send_response(status)
        for key, value in headers.items():
            h.send_header(key, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)
