"""A minimal Hugging Face Hub on 127.0.0.1 for the `push` tests.

No package on the registry serves the Hub's upload API (../shared/reference/environment.md), so
this speaks exactly the routes `huggingface_hub` 2.4 calls for a dataset repo, over real HTTP:

- `POST /api/repos/create`                                   create_repo (409 when it exists)
- `POST /api/validate-yaml`                                  card metadata check before README.md is committed
- `GET  /api/datasets/{repo}[/revision/{rev}]`               repo_info / dataset_info
- `POST /api/datasets/{repo}/preupload/{rev}`                upload mode per file (regular / lfs)
- `POST /datasets/{repo}.git/info/lfs/objects/batch`         LFS batch: upload actions for missing objects
- `PUT  /lfs/{oid}`                                          the LFS upload itself (sha256 checked)
- `POST /api/datasets/{repo}/commit/{rev}`                   NDJSON commit: header, file, lfsFile, deletedFile
- `POST /api/datasets/{repo}/paths-info/{rev}`               blob ids and LFS sha256 of given paths
- `GET  /api/datasets/{repo}/tree/{rev}[/{path}]`            listing (what HfFileSystem and load_dataset use)
- `GET|HEAD /datasets/{repo}/resolve/{rev}/{path}`           downloads, with Range support

Writes need `Authorization: Bearer <token>` with the token the test configured, so a test also
proves the client sent it. `fail_commits_after` makes every commit after the first N answer 500;
`stall_commit` hangs one commit (the test kills the client meanwhile); `request_log` keeps
(method, path) of every request.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml

SIZE_CATEGORIES = {
    "n<1K",
    "1K<n<10K",
    "10K<n<100K",
    "100K<n<1M",
    "1M<n<10M",
    "10M<n<100M",
    "100M<n<1B",
    "1B<n<10B",
    "10B<n<100B",
    "100B<n<1T",
    "n>1T",
}
LFS_SUFFIXES = (".parquet", ".png", ".npz", ".flac", ".wav", ".npy", ".arrow")


def git_blob_id(data: bytes) -> str:
    """The git blob sha1 the Hub reports as `oid` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@dataclass
class Repo:
    private: bool
    files: dict[str, tuple[bytes, bool]] = field(default_factory=dict)  # path -> (content, is_lfs)
    commits: list[str] = field(default_factory=lambda: [hashlib.sha1(b"initial").hexdigest()])
    commit_messages: list[str] = field(default_factory=lambda: ["initial commit"])
    commits_per_path: dict[str, int] = field(default_factory=dict)


class FakeHub:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.lfs_uploads: dict[str, int] = {}
        self.fail_commits_after: int | None = None
        # Stall the Nth commit (1-based) until `release` is set, then answer 500: the test kills
        # the pushing process meanwhile, as a crash or Ctrl-C mid-push would.
        self.stall_commit: int | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.commits_seen = 0
        self.request_log: list[tuple[str, str]] = []
        self.unauthorized: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def file_bytes(self, repo_id: str, path: str) -> bytes:
        return self.repos[repo_id].files[path][0]


def _handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        # -- plumbing --
        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client was killed mid-request
                    pass

        def _json(self, status: int, obj, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, message: str, code: str | None = None, head: bool = False) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, head=head)

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {hub.token}":
                return True
            hub.unauthorized.append((self.command, self.path))
            self._error(401, "Invalid credentials in Authorization header")
            return False

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, f"Repository not found: {repo_id}", "RepoNotFound")
            return repo

        def do_GET(self) -> None:
            self._route("GET")

        def do_HEAD(self) -> None:
            self._route("HEAD")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PUT(self) -> None:
            self._route("PUT")

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            path = unquote(url.path)
            hub.request_log.append((method, path))
            with hub.lock:
                if method == "POST" and path == "/api/repos/create":
                    return self._create_repo()
                if method == "POST" and path == "/api/validate-yaml":
                    return self._validate_yaml()
                if method == "PUT" and (m := re.fullmatch(r"/lfs/([0-9a-f]{64})", path)):
                    return self._lfs_upload(m[1])
                if method == "POST" and (m := re.fullmatch(r"/datasets/(.+/.+)\.git/info/lfs/objects/batch", path)):
                    return self._lfs_batch(m[1])
                m = re.fullmatch(
                    r"/api/datasets/([^/]+/[^/]+)(?:/(preupload|commit|paths-info|tree|revision)/(.*))?", path
                )
                if m:
                    repo_id, op, rest = m[1], m[2], m[3] or ""
                    rev, _, sub = rest.partition("/")
                    if op is None or op == "revision":
                        return self._info(repo_id, head=method == "HEAD")
                    if op == "preupload" and method == "POST":
                        return self._preupload(repo_id)
                    if op == "commit" and method == "POST":
                        return self._commit(repo_id, rev)
                    if op == "paths-info" and method == "POST":
                        return self._paths_info(repo_id)
                    if op == "tree" and method == "GET":
                        return self._tree(repo_id, sub, parse_qs(url.query))
                if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve(m[1], m[3], head=method == "HEAD")
            self._error(404, f"no route for {method} {path}")

        # -- routes --
        def _create_repo(self) -> None:
            if not self._authorized():
                return
            req = json.loads(self._body())
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if repo_id in hub.repos:  # the Hub's 409 still names the repo's url
                return self._json(
                    409, {"error": "You already created this dataset repo", "url": f"{hub.url}/datasets/{repo_id}"}
                )
            hub.repos[repo_id] = Repo(private=bool(req.get("private")))
            self._json(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})

        def _validate_yaml(self) -> None:
            # The Hub checks a card's metadata before a commit that adds README.md; these are the
            # rules of its schema that a dataset card most easily breaks.
            content = json.loads(self._body())["content"]
            errors = []
            m = re.match(r"^---\n(.*?)\n---\n", content, re.S)
            try:
                meta = yaml.safe_load(m[1]) if m else {}
            except yaml.YAMLError as exc:
                return self._json(400, {"errors": [{"message": f"YAML: {exc}"}]})
            for label in meta.get("size_categories", []):
                if label not in SIZE_CATEGORIES:
                    errors.append({"message": f'"size_categories" has an unknown value {label!r}'})
            for config in meta.get("configs", []):
                if "config_name" not in config or "data_files" not in config:
                    errors.append({"message": '"configs" entries need config_name and data_files'})
            info = meta.get("dataset_info", {})
            for feature in info.get("features", []) if isinstance(info, dict) else []:
                if "name" not in feature or not ({"dtype", "struct", "list", "sequence", "class_label"} & set(feature)):
                    errors.append({"message": f'"dataset_info.features" entry without name/type: {feature}'})
            self._json(400 if errors else 200, {"errors": errors, "warnings": []})

        def _info(self, repo_id: str, head: bool) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            body = {
                "id": repo_id,
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "author": repo_id.split("/")[0],
                "sha": repo.commits[-1],
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "lastModified": "2026-12-02T00:00:00.000Z",
                "createdAt": "2026-12-02T00:00:00.000Z",
                "siblings": [{"rfilename": p} for p in sorted(repo.files)],
            }
            self._send(200, b"" if head else json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _preupload(self, repo_id: str) -> None:
            if not self._authorized() or (repo := self._repo(repo_id)) is None:
                return
            files = json.loads(self._body())["files"]
            out = []
            for f in files:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 1_000_000
                entry = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
                if f["path"] in repo.files:
                    content, _ = repo.files[f["path"]]
                    entry["oid"] = git_blob_id(content)
                out.append(entry)
            self._json(200, {"files": out, "commitOid": repo.commits[-1]})

        def _lfs_batch(self, repo_id: str) -> None:
            if not self._authorized() or self._repo(repo_id) is None:
                return
            req = json.loads(self._body())
            objects = []
            for obj in req["objects"]:
                item = {"oid": obj["oid"], "size": obj["size"]}
                if obj["oid"] not in hub.lfs_objects:  # already stored: no action, the client skips it
                    item["actions"] = {"upload": {"href": f"{hub.url}/lfs/{obj['oid']}", "header": {}}}
                objects.append(item)
            self._json(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

        def _lfs_upload(self, oid: str) -> None:
            data = self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                return self._error(400, "sha256 mismatch")
            hub.lfs_objects[oid] = data
            hub.lfs_uploads[oid] = hub.lfs_uploads.get(oid, 0) + 1
            self._send(200)

        def _commit(self, repo_id: str, rev: str) -> None:
            if not self._authorized() or (repo := self._repo(repo_id)) is None:
                return
            body = self._body()
            hub.commits_seen += 1
            if hub.stall_commit is not None and hub.commits_seen == hub.stall_commit:
                hub.lock.release()  # let other requests through while this one hangs
                try:
                    hub.stalled.set()
                    hub.release.wait(timeout=120)
                finally:
                    hub.lock.acquire()
                return self._error(500, "Internal Error - connection lost")
            if hub.fail_commits_after is not None and hub.commits_seen > hub.fail_commits_after:
                return self._error(500, "Internal Error - simulated outage")
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            parent = header.get("parentCommit")
            if parent and parent != repo.commits[-1]:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
            staged: dict[str, tuple[bytes, bool] | None] = {}
            for item in lines:
                key, value = item["key"], item["value"]
                if key == "file":
                    staged[value["path"]] = (base64.b64decode(value["content"]), False)
                elif key == "lfsFile":
                    if value["oid"] not in hub.lfs_objects:
                        return self._error(400, f"LFS object {value['oid']} was never uploaded")
                    staged[value["path"]] = (hub.lfs_objects[value["oid"]], True)
                elif key == "deletedFile":
                    staged[value["path"]] = None
            for p, v in staged.items():
                if v is None:
                    repo.files.pop(p, None)
                else:
                    repo.files[p] = v
                    repo.commits_per_path[p] = repo.commits_per_path.get(p, 0) + 1
            oid = hashlib.sha1(body + repo.commits[-1].encode()).hexdigest()
            repo.commits.append(oid)
            repo.commit_messages.append(header.get("summary", ""))
            self._json(
                200,
                {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None},
            )

        def _entry(self, path: str, content: bytes, is_lfs: bool) -> dict:
            if is_lfs:
                oid = hashlib.sha256(content).hexdigest()
                pointer = lfs_pointer(oid, len(content))
                return {
                    "type": "file",
                    "path": path,
                    "size": len(content),
                    "oid": git_blob_id(pointer),
                    "lfs": {"oid": oid, "size": len(content), "pointerSize": len(pointer)},
                }
            return {"type": "file", "path": path, "size": len(content), "oid": git_blob_id(content)}

        def _paths_info(self, repo_id: str) -> None:
            if (repo := self._repo(repo_id)) is None:
                return
            raw = self._body().decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                paths = json.loads(raw)["paths"]
            else:
                paths = parse_qs(raw).get("paths", [])
            self._json(200, [self._entry(p, *repo.files[p]) for p in paths if p in repo.files])

        def _tree(self, repo_id: str, sub: str, query: dict) -> None:
            if (repo := self._repo(repo_id)) is None:
                return
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            prefix = sub.strip("/") + "/" if sub.strip("/") else ""
            entries: dict[str, dict] = {}
            for p, (content, is_lfs) in sorted(repo.files.items()):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix) :].split("/")
                for depth in range(1, len(rest)):  # folders on the way
                    folder = prefix + "/".join(rest[:depth])
                    if recursive or depth == 1:
                        entries.setdefault(folder, {"type": "directory", "path": folder, "oid": "0" * 40, "size": 0})
                if recursive or len(rest) == 1:
                    entries[p] = self._entry(p, content, is_lfs)
            if prefix and not entries:
                return self._error(404, f"{sub} does not exist on main", "EntryNotFound")
            self._json(200, list(entries.values()))

        def _resolve(self, repo_id: str, path: str, head: bool) -> None:
            if (repo := self._repo(repo_id)) is None:
                return
            if path not in repo.files:
                return self._error(404, "Entry not found", "EntryNotFound", head=head)
            content, is_lfs = repo.files[path]
            entry = self._entry(path, content, is_lfs)
            etag = entry["lfs"]["oid"] if is_lfs else entry["oid"]
            headers = {
                "ETag": f'"{etag}"',
                "X-Repo-Commit": repo.commits[-1],
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if is_lfs:
                headers |= {"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(content))}
            rng = self.headers.get("Range")
            if rng and (m := re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())):
                start = int(m[1])
                end = min(int(m[2]) if m[2] else len(content) - 1, len(content) - 1)
                part = content[start : end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                return self._send(206, part, headers, head=head)
            self._send(200, content, headers, head=head)

    return Handler
