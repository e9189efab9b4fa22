"""Push a run folder to a Hugging Face Hub dataset repo, resumably.

huggingface_hub 2.4 has no `upload_large_folder`, and one `upload_folder` commit of a 400K-sample
run (hundreds of GB) is one long all-or-nothing call. So a push is a series of small commits:

1. `paths-info` on every file we publish: a file whose remote LFS sha256 (or, for small regular
   files, git blob id) equals the local one is already there and is skipped;
2. one commit per missing shard (`data/<split>-NNNNN-of-NNNNN.parquet`, uploaded through LFS), so
   an interrupted push keeps every shard it finished;
3. a last commit with the card (`README.md`), `manifest.parquet` and `config.yaml`, so the Hub
   never shows a card describing shards that are not there yet.

A re-run after an interruption uploads only what is missing. `follow_run` pushes a run while it
is being generated (streamed runs): each round commits the shards finished since the last one.
Each commit is retried with exponential backoff (on top of huggingface_hub's own per-request
retries) before the push gives up with a message naming the file.

The token is never a parameter: huggingface_hub reads `HF_TOKEN` or the stored `hf auth login`
token itself. Nothing here formats a request's headers into a message; `redact` scrubs any
exception text we re-raise, in case a library puts the token into one.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from huggingface_hub import CommitOperationAdd, HfApi, RepoFile
from huggingface_hub.errors import HfHubHTTPError
from pydantic import BaseModel

from factory.retry import RetryPolicy
from factory.run.read import RunFolderError, complete_shards, open_run
from factory.run.store import RunStore

# What a dataset repo holds, besides the shards; the rest of a run folder (shard records,
# signatures, manifest parts) is the factory's own bookkeeping.
ROOT_FILES = ("manifest.parquet", "config.yaml", "audit.parquet", "card/overview.png", "audit_fto.png")
CARD = "README.md"
PATHS_INFO_CHUNK = 500  # paths per paths-info request (the Hub caps request sizes)


class PushError(RuntimeError):
    """A push that cannot go on; the message says which file and why (never the token)."""


class PushReport(BaseModel):
    repo_id: str
    revision: str
    uploaded: list[str]
    skipped: list[str]
    commits: int
    bytes_uploaded: int


def git_blob_id(data: bytes) -> str:
    """The git blob sha1 the Hub reports as the `oid` of a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


_TOKEN_RE = re.compile(r"hf_[A-Za-z0-9]{8,}")


def redact(text: str, token: str | None = None) -> str:
    """`text` with Hugging Face tokens (the given one, and anything shaped like one) masked."""
    if token:
        text = text.replace(token, "hf_***")
    return _TOKEN_RE.sub("hf_***", text)


class PublishFile(NamedTuple):
    path_in_repo: str
    store: RunStore
    rel: str  # path inside the run folder (or the run's fsspec destination)


def publish_plan(
    run_dir: Path | str, storage_options: dict | None = None
) -> tuple[list[PublishFile], list[PublishFile]]:
    """(shards, root files) to publish. Only finished, verified shards count, so a run still being
    generated can be pushed as far as it goes. `run_dir` may be a local folder or the fsspec URL a
    run was published to (`run.destination`)."""
    shards = [
        PublishFile(f"data/{posixpath.basename(rel)}", store, rel)
        for store, rel in complete_shards(run_dir, True, storage_options)
    ]
    store = open_run(run_dir, storage_options)
    root = [PublishFile(name, store, name) for name in (*ROOT_FILES, CARD) if store.exists(name)]
    return shards, root


def _remote_state(api: HfApi, repo_id: str, revision: str, paths: list[str]) -> dict[str, tuple[str, str]]:
    """path -> ("lfs", sha256) or ("git", blob id) for the paths that exist on the remote."""
    state: dict[str, tuple[str, str]] = {}
    for i in range(0, len(paths), PATHS_INFO_CHUNK):
        for info in api.get_paths_info(
            repo_id, paths[i : i + PATHS_INFO_CHUNK], repo_type="dataset", revision=revision
        ):
            if not isinstance(info, RepoFile):  # a folder: nothing to compare
                continue
            if info.lfs:
                state[info.path] = ("lfs", info.lfs.sha256)
            elif info.blob_id:
                state[info.path] = ("git", info.blob_id)
    return state


def _same(remote: tuple[str, str] | None, f: PublishFile) -> bool:
    if remote is None:
        return False
    kind, oid = remote
    if kind == "lfs":
        return oid == f.store.sha256(f.rel)
    return oid == git_blob_id(f.store.read_bytes(f.rel))


def _local_copy(f: PublishFile, scratch: Path) -> Path:
    """A local path to upload from: the file itself, or a copy fetched from a remote destination."""
    if f.store.is_local:
        return Path(f.store.path(f.rel))
    target = scratch / f.rel
    target.parent.mkdir(parents=True, exist_ok=True)
    f.store.fs.get_file(f.store.path(f.rel), str(target))
    return target


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        return status is None or status >= 500 or status in (408, 429)
    return isinstance(exc, OSError | TimeoutError | ConnectionError)


def push_run(
    run_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    storage_options: dict | None = None,
    api: HfApi | None = None,
    attempts: int = 4,
    wait_s: float = 2.0,
    on_file: Callable[[str, str], None] | None = None,
) -> PushReport:
    """Push the run at `run_dir` (a folder, or the fsspec URL it was published to) to the dataset
    repo `repo_id`; see the module docstring. `on_file(path, what)` reports progress ("skip" or
    "upload")."""
    api = api or HfApi()
    revision = revision or "main"
    shards, root = publish_plan(run_dir, storage_options)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
        remote = _remote_state(api, repo_id, revision, [f.path_in_repo for f in shards + root])
    except HfHubHTTPError as exc:
        raise PushError(redact(f"cannot reach dataset repo {repo_id}: {exc}")) from None

    report = PushReport(repo_id=repo_id, revision=revision, uploaded=[], skipped=[], commits=0, bytes_uploaded=0)
    # One commit per shard, then the card and the files that describe the whole run.
    batches = [[item] for item in shards] + [root]
    for batch in batches:
        todo = []
        for f in batch:
            if _same(remote.get(f.path_in_repo), f):
                report.skipped.append(f.path_in_repo)
                if on_file:
                    on_file(f.path_in_repo, "skip")
            else:
                todo.append(f)
        if not todo:
            continue
        names = ", ".join(f.path_in_repo for f in todo)
        with tempfile.TemporaryDirectory(prefix="duplex-push-") as scratch:
            local = [_local_copy(f, Path(scratch)) for f in todo]
            operations = [
                CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(path))
                for f, path in zip(todo, local)
            ]
            try:
                for attempt in RetryPolicy(attempts, wait_s, max_backoff_s=60).sync(_retryable):
                    with attempt:
                        api.create_commit(
                            repo_id, operations, commit_message=f"Add {names}", repo_type="dataset", revision=revision
                        )
            except Exception as exc:  # noqa: BLE001 - re-raised as PushError with the file named
                raise PushError(
                    redact(
                        f"commit of {names} failed after {attempts} attempts: {type(exc).__name__}: {exc}. "
                        f"{len(report.uploaded)} files were pushed; re-run the same command to resume."
                    )
                ) from None
            report.commits += 1
            report.bytes_uploaded += sum(path.stat().st_size for path in local)
        for f in todo:
            report.uploaded.append(f.path_in_repo)
            if on_file:
                on_file(f.path_in_repo, "upload")
    return report


def run_is_final(run_dir: Path | str, storage_options: dict | None = None) -> bool:
    """True once the run was finalized (its manifest and card are written, after every shard)."""
    store = open_run(run_dir, storage_options)
    return store.exists("manifest.parquet") and store.exists(CARD)


def follow_run(
    run_dir: Path | str,
    repo_id: str,
    *,
    poll_s: float = 60.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_round: Callable[[PushReport | None], None] | None = None,
    **push_options,
) -> list[PushReport]:
    """Push a run while it is being generated: every `poll_s` seconds, commit the shards finished
    since the last round; stop after the round that follows finalization (so the card and manifest
    go last). A run with no finished shard yet is waited for."""
    reports: list[PushReport] = []
    start = time.monotonic()
    while True:
        final = run_is_final(run_dir, push_options.get("storage_options"))  # before pushing: nothing is missed
        try:
            report = push_run(run_dir, repo_id, **push_options)
        except RunFolderError:  # no shard finished yet
            report = None
        if report is not None:
            reports.append(report)
        if on_round:
            on_round(report)
        if final:
            return reports
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise PushError(f"{run_dir} was not finalized within {timeout_s:.0f} s; re-run push to go on")
        sleep(poll_s)
