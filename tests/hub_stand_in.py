"""A loopback stand-in for the Hugging Face Hub's HTTP API, answering the real huggingface_hub client (1.x)
the way the Hub does, so downloads and uploads are tested through the client's own code, not a fake of it.

Reads: repo info (GET /api/models/{repo}[/revision/{rev}]), the file tree (GET /api/models/{repo}/tree/{rev}),
file resolution (HEAD/GET /{repo}/resolve/{rev}/{file}; ETag the LFS sha256 or the git blob id).
Writes, as `create_repo` and `upload_folder` make them: POST /api/repos/create (409 when it exists),
POST /api/validate-yaml (a card's front matter: a mapping, and the Hub's list/string fields of the right type),
POST /api/models/{repo}/preupload/{rev} (which files go through LFS, and the oid of a file already there),
the LFS batch API (POST /{repo}.git/info/lfs/objects/batch, "basic" transfer: a PUT per object, its sha256
checked) and POST /api/models/{repo}/commit/{rev} (ndjson: header, inline files, LFS pointers).
Uploads need HF_HUB_DISABLE_XET=1 in the client: the Xet protocol (content-defined chunks to a CAS server)
is the one part of the wire this does not speak."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LFS_SUFFIXES = (".safetensors", ".gguf", ".bin")


def is_lfs(name: str, size: int) -> bool:
    return name.endswith(LFS_SUFFIXES) or size >= 10_000_000


def git_oid(data: bytes, name: str) -> str:
    """The id the Hub gives a file: its sha256 for LFS files, its git blob id for the rest."""
    if is_lfs(name, len(data)):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def validate_card(content: str) -> tuple[int, dict]:
    """What the Hub refuses in a model card's front matter: YAML that does not parse or is not a mapping,
    and metadata fields of the wrong kind."""
    import yaml

    if not content.startswith("---\n"):
        return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}
    try:
        meta = yaml.safe_load(content[4:].split("\n---", 1)[0])
    except yaml.YAMLError as e:
        return 400, {"errors": [{"message": f"YAML: {e}"}]}
    if not isinstance(meta, dict):
        return 400, {"errors": [{"message": "metadata is not a mapping"}]}
    errors = [
        {"message": f'"{key}" must be {kind.__name__} or a list of them'}
        for key, kind in (("license", str), ("library_name", str), ("base_model", str), ("language", str))
        if key in meta and not isinstance(meta[key], kind | list)
    ] + [
        {"message": f'"{key}" must be a list of strings'}
        for key in ("tags", "datasets")
        if key in meta and not (isinstance(meta[key], list) and all(isinstance(v, str) for v in meta[key]))
    ]
    return (400 if errors else 200), {"errors": errors, "warnings": []}


@dataclass
class Repo:
    private: bool
    sha: str = "0" * 40
    files: dict[str, bytes] = field(default_factory=dict)
    commits: int = 0


class HubStandIn:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.served: dict[str, int] = {}  # file bodies served by resolve, by name
        self.put_bytes = 0  # LFS bytes received
        self.refuse_commits = False  # a commit refused after its LFS uploads: what an interrupted push leaves
        self.url = ""

    def add_repo(self, repo: str, sha: str, folder: Path, private: bool = False) -> None:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        self.repos[repo] = Repo(private, sha, files)

    # --- the HTTP side -------------------------------------------------------------------------------

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # httpx streams file uploads
                    out = bytearray()
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return bytes(out)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, body: object = b"", headers: dict[str, str] | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if not isinstance(body, bytes):
                    self.send_header("Content-Type", "application/json")
                if status == 404:
                    self.send_header("X-Error-Code", "RepoNotFound" if "/api/" in self.path else "EntryNotFound")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = self.path.split("?")[0]
                for name, repo in hub.repos.items():
                    if path in (f"/api/models/{name}", f"/api/models/{name}/revision/main") or path.startswith(
                        f"/api/models/{name}/revision/"
                    ):
                        siblings = [{"rfilename": f} for f in repo.files]
                        return self._send(
                            200, {"id": name, "sha": repo.sha, "private": repo.private, "siblings": siblings}
                        )
                    if path.startswith(f"/api/models/{name}/tree/"):
                        return self._send(200, [hub.tree_entry(f, d) for f, d in repo.files.items()])
                    if path.startswith(f"/{name}/resolve/"):
                        rev, _, file = path[len(f"/{name}/resolve/") :].partition("/")
                        if rev not in (repo.sha, "main") or file not in repo.files:
                            return self._send(404)
                        data = repo.files[file]
                        if self.command == "GET":
                            hub.served[file] = hub.served.get(file, 0) + 1
                        return self._send(200, data, {"ETag": f'"{git_oid(data, file)}"', "X-Repo-Commit": repo.sha})
                self._send(404, {"error": "Repository not found"})

            def do_PUT(self):
                oid = self.path.split("?")[0].rpartition("/")[2]
                data = self._body()
                if hashlib.sha256(data).hexdigest() != oid:
                    return self._send(400, {"error": "sha256 does not match the object id"})
                hub.lfs_objects[oid] = data
                hub.put_bytes += len(data)
                self._send(200)

            def do_POST(self):
                path, body = self.path.split("?")[0], self._body()
                if path == "/api/repos/create":
                    return self._send(*hub.create(json.loads(body)))
                if path == "/api/validate-yaml":
                    return self._send(*validate_card(json.loads(body)["content"]))
                for name, repo in hub.repos.items():
                    if path.startswith(f"/api/models/{name}/preupload/"):
                        return self._send(200, {"files": [hub.upload_mode(repo, f) for f in json.loads(body)["files"]]})
                    if path == f"/{name}.git/info/lfs/objects/batch":
                        return self._send(200, hub.lfs_batch(json.loads(body)["objects"]))
                    if path.startswith(f"/api/models/{name}/commit/"):
                        return self._send(*hub.commit(name, repo, body))
                self._send(404, {"error": "Repository not found"})

        return Handler

    # --- what each call does ---------------------------------------------------------------------------

    def tree_entry(self, name: str, data: bytes) -> dict:
        entry = {"type": "file", "path": name, "size": len(data), "oid": git_oid(data, name)}
        if is_lfs(name, len(data)):
            entry["lfs"] = {"oid": git_oid(data, name), "size": len(data), "pointerSize": 134}
        return entry

    def create(self, req: dict) -> tuple[int, dict]:
        repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        if repo in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
        self.repos[repo] = Repo(private=req.get("visibility") == "private")
        return 200, {"url": f"{self.url}/{repo}", "name": repo}

    def upload_mode(self, repo: Repo, f: dict) -> dict:
        present = repo.files.get(f["path"])
        mode = "lfs" if is_lfs(f["path"], f["size"]) else "regular"
        out = {"path": f["path"], "uploadMode": mode, "shouldIgnore": False}
        return out | ({"oid": git_oid(present, f["path"])} if present is not None else {})

    def lfs_batch(self, objects: list[dict]) -> dict:
        def answer(o: dict) -> dict:
            if o["oid"] in self.lfs_objects:  # already stored: no action, the client skips it
                return {"oid": o["oid"], "size": o["size"]}
            href = f"{self.url}/lfs-upload/{o['oid']}"
            return {"oid": o["oid"], "size": o["size"], "actions": {"upload": {"href": href}}}

        return {"transfer": "basic", "objects": [answer(o) for o in objects]}

    def commit(self, name: str, repo: Repo, body: bytes) -> tuple[int, dict]:
        if self.refuse_commits:
            return 400, {"error": "commit refused by the stand-in"}
        staged = dict(repo.files)
        for line in body.splitlines():
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_objects:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                staged[value["path"]] = self.lfs_objects[value["oid"]]
            elif key == "deletedFile":
                staged.pop(value["path"], None)
            elif key == "deletedFolder":
                staged = {p: d for p, d in staged.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        repo.files, repo.commits = staged, repo.commits + 1
        repo.sha = hashlib.sha1(
            repr(sorted((p, hashlib.sha1(d).hexdigest()) for p, d in staged.items())).encode()
        ).hexdigest()
        return 200, {"commitUrl": f"{self.url}/{name}/commit/{repo.sha}", "commitOid": repo.sha, "pullRequestUrl": None}


@contextmanager
def running(hub: HubStandIn) -> Iterator[HubStandIn]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serving(repo: str, sha: str, folder: Path) -> Iterator[tuple[str, dict[str, int]]]:
    """`folder` as model repo `repo` at commit `sha`; yields the endpoint URL and the file bodies served."""
    hub = HubStandIn()
    hub.add_repo(repo, sha, folder)
    with running(hub):
        yield hub.url, hub.served
