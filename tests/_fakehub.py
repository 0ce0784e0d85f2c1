"""A fake Hugging Face hub on loopback, for testing downloads without the network.

It answers the four requests huggingface_hub's ``snapshot_download`` makes: the revision's commit
(``/api/models/{repo}/revision/{rev}``), the file listing (``/api/models/{repo}/tree/{rev}``), and
HEAD and GET of a file (``/{repo}/resolve/{rev}/{path}``), with the headers huggingface_hub reads
(``X-Repo-Commit``, ``ETag``, ``Content-Length``, ``X-Error-Code``). Every request is logged, so a test
can check which files were downloaded.

    hub = FakeHub()                                  # serves on 127.0.0.1, a free port
    hub.add("org/tiny", {"config.json": b"..."})     # branch "main"; returns the commit sha
    hub.add("org/tiny", files, revision="v1")        # another branch
    hub.url, hub.log, hub.downloads()
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import threading
import urllib.parse


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, tuple[str, dict[str, bytes]]]] = {}  # repo -> revision -> (sha, files)
        self.log: list[tuple[str, str]] = []  # (method, path)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, repo: str, files: dict[str, bytes], revision: str = "main") -> str:
        sha = hashlib.sha1(repr((repo, revision, sorted(files))).encode()).hexdigest()
        self.repos.setdefault(repo, {})[revision] = (sha, dict(files))
        return sha

    def add_directory(self, repo: str, directory, revision: str = "main", extra: dict | None = None) -> str:
        """Serve every file of a local directory (plus ``extra`` name -> bytes) as a repository."""
        files = {}
        for name in sorted(os.listdir(directory)):
            with open(os.path.join(directory, name), "rb") as f:
                files[name] = f.read()
        return self.add(repo, {**files, **(extra or {})}, revision)

    def downloads(self) -> list[str]:
        """The file paths fetched with GET (in request order)."""
        return [p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in self.log if m == "GET" and "/resolve/" in p]

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    # --- answers ------------------------------------------------------------------------------

    def lookup(self, repo, revision):
        """-> (sha, files), or (error code, message) when the repo or the revision is unknown."""
        if repo not in self.repos:
            return "RepoNotFound", f"Repository {repo} not found"
        for sha, files in self.repos[repo].values():
            if revision == sha:
                return sha, files
        if revision not in self.repos[repo]:
            return "RevisionNotFound", f"Revision {revision} not found"
        return self.repos[repo][revision]


def _handler(hub: FakeHub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output quiet
            pass

        def do_HEAD(self):
            self.answer(body=False)

        def do_GET(self):
            self.answer(body=True)

        def answer(self, body):
            path = urllib.parse.urlsplit(self.path).path
            hub.log.append((self.command, path))
            m = re.fullmatch(r"/api/models/(.+?)/(revision|tree)/([^/]+)(/.*)?", path)
            if m:
                return self.api(urllib.parse.unquote(m[1]), m[2], urllib.parse.unquote(m[3]), body)
            m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
            if m:
                return self.resolve(m[1], urllib.parse.unquote(m[2]), urllib.parse.unquote(m[3]), body)
            self.send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)

        def api(self, repo, kind, revision, body):
            sha, files = hub.lookup(repo, revision)
            if isinstance(files, str):
                return self.send(404, json.dumps({"error": files}).encode(), {"X-Error-Code": sha}, body)
            if kind == "revision":
                info = {"id": repo, "modelId": repo, "sha": sha, "siblings": [{"rfilename": n} for n in files]}
                return self.send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
            tree = [{"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": name}
                    for name, data in sorted(files.items())]
            self.send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)

        def resolve(self, repo, revision, name, body):
            sha, files = hub.lookup(repo, revision)
            if isinstance(files, str):
                return self.send(404, files.encode(), {"X-Error-Code": sha}, body)
            if name not in files:
                return self.send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"}, body)
            data = files[name]
            etag = '"' + hashlib.sha1(data).hexdigest() + '"'
            self.send(200, data, {"X-Repo-Commit": sha, "ETag": etag}, body)

        def send(self, status, data, headers, body):
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler
