"""`duplex-factory push` against a Hub on 127.0.0.1 (tests/hub_server.py) that speaks the upload
API huggingface_hub really calls: preupload, LFS batch and upload, NDJSON commit, paths-info.

The truth comes from the server (what it stored, how often each file was committed and each LFS
object uploaded, the Authorization header it received) and from `datasets.load_dataset` reading
the repo back through the same server, in a fresh process.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import soundfile as sf

from factory.publish.hub import git_blob_id, publish_plan, redact
from tests.hub_server import FakeHub

TOKEN = "hf_DuplexFactoryFakeToken0123456789abcdef"  # recognisable, so a leak is found by grep
CLI = Path(sys.executable).parent / "duplex-factory"


def _env(hub: FakeHub, tmp: Path, token: str | None = TOKEN) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_TOKEN", None)
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HOME": str(tmp / "hf-home"),  # no stored login from this machine
        "HF_HUB_DISABLE_XET": "1",  # the fake Hub speaks LFS, not Xet (the real Hub speaks both)
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_DATASETS_CACHE": str(tmp / "datasets-cache"),
    }
    if token:
        env["HF_TOKEN"] = token
    return env


def _push(run: Path, env: dict[str, str], repo: str = "lab/duplex-tiny") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), "push", str(run), "--repo", repo], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def pushed(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """A push killed during its second commit, then the same command again."""
    tmp = tmp_path_factory.mktemp("push")
    with FakeHub(TOKEN) as hub:
        env = _env(hub, tmp)
        hub.stall_commit = 2  # shard 0 lands; shard 1's commit hangs and the process is killed
        proc = subprocess.Popen(
            [str(CLI), "push", str(tiny_run), "--repo", "lab/duplex-tiny"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert hub.stalled.wait(timeout=240), "the push never reached its second commit"
        proc.send_signal(signal.SIGKILL)
        first_out, first_err = proc.communicate(timeout=60)
        hub.release.set()
        assert proc.returncode == -signal.SIGKILL
        after_kill = dict(hub.repos["lab/duplex-tiny"].files)
        hub.stall_commit = None
        second = _push(tiny_run, env)
        yield {
            "hub": hub,
            "env": env,
            "tmp": tmp,
            "after_kill": after_kill,
            "second": second,
            "logs": first_out + first_err + second.stdout + second.stderr,
        }


def test_interrupted_push_resumes_and_every_file_lands_once_with_identical_bytes(tiny_run, pushed) -> None:
    hub, second = pushed["hub"], pushed["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    shards, root = publish_plan(tiny_run)
    assert len(shards) == 2 and {f.path_in_repo for f in root} >= {"README.md", "manifest.parquet", "config.yaml"}
    # The kill left exactly the first shard; the re-run skipped it and sent the rest.
    assert set(pushed["after_kill"]) == {shards[0].path_in_repo}
    assert f"skip   {shards[0].path_in_repo}" in second.stdout
    repo = hub.repos["lab/duplex-tiny"]
    assert set(repo.files) == {f.path_in_repo for f in shards + root}
    for f in shards + root:
        assert hub.file_bytes("lab/duplex-tiny", f.path_in_repo) == (tiny_run / f.rel).read_bytes(), f.path_in_repo
        assert repo.commits_per_path[f.path_in_repo] == 1, f.path_in_repo
    assert all(n == 1 for n in hub.lfs_uploads.values()), hub.lfs_uploads
    # Shards travel through LFS; the card is a regular file committed last, after every shard.
    assert all(repo.files[f.path_in_repo][1] for f in shards) and not repo.files["README.md"][1]
    assert repo.commit_messages[-1].startswith("Add") and "README.md" in repo.commit_messages[-1]
    # Every request that needed the token carried it.
    assert hub.unauthorized == []


def test_a_third_push_uploads_nothing(tiny_run, pushed) -> None:
    hub = pushed["hub"]
    before = len(hub.repos["lab/duplex-tiny"].commits)
    again = _push(tiny_run, pushed["env"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(hub.repos["lab/duplex-tiny"].commits) == before
    assert "0 files pushed" in again.stdout


def test_load_dataset_reads_the_pushed_repo_back(tiny_run, pushed) -> None:
    code = (
        "import sys, json\n"
        "from datasets import load_dataset, Audio\n"
        "ds = load_dataset('lab/duplex-tiny', split='train')\n"
        "for c in ('audio', 'audio_augmented', 'voice_prompt'):\n"
        "    ds = ds.cast_column(c, Audio(decode=False))\n"
        "out = [{'id': r['id'], 'audio': r['audio']['bytes'].hex()} for r in ds]\n"
        "json.dump(out, sys.stdout)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=pushed["env"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    loaded = {r["id"]: bytes.fromhex(r["audio"]) for r in json.loads(result.stdout)}
    local = {}
    for path in sorted((tiny_run / "data").glob("*.parquet")):
        for row in pq.read_table(path, columns=["id", "audio"]).to_pylist():
            local[row["id"]] = row["audio"]["bytes"]
    assert loaded == local
    stereo, _ = sf.read(io.BytesIO(next(iter(loaded.values()))), always_2d=True)
    assert stereo.shape[1] == 2


def test_the_token_never_shows_in_logs_or_outputs(tiny_run, pushed) -> None:
    assert TOKEN not in pushed["logs"]
    for path in tiny_run.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    # ...but it was what authorised the writes (a push without it is refused, clearly).
    result = _push(tiny_run, _env(pushed["hub"], pushed["tmp"], token=None), repo="lab/other")
    assert result.returncode == 6
    assert "401" in result.stdout and TOKEN not in result.stdout + result.stderr


def test_redact_masks_tokens() -> None:
    assert redact(f"Authorization: Bearer {TOKEN}") == "Authorization: Bearer hf_***"
    assert redact("hf_abcdefghijklmnop and more", token=None) == "hf_*** and more"


def test_git_blob_id_is_gits() -> None:
    # `git hash-object` of "hello\n"
    assert git_blob_id(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_push_from_a_run_published_to_an_fsspec_destination(tiny_run, monkeypatch) -> None:
    """A streamed run (run.destination) has no local copy: push reads it from the store. fsspec's
    in-memory filesystem stands in for S3 (the same non-local code path: files fetched per commit)."""
    import fsspec
    import huggingface_hub.constants
    from huggingface_hub import HfApi

    from factory.publish.hub import push_run

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    fs = fsspec.filesystem("memory")
    for path in tiny_run.rglob("*"):
        if path.is_file():
            fs.pipe_file(f"/published/tiny/{path.relative_to(tiny_run)}", path.read_bytes())
    with FakeHub(TOKEN) as hub:
        report = push_run("memory://published/tiny", "lab/streamed", api=HfApi(endpoint=hub.url, token=TOKEN))
        repo = hub.repos["lab/streamed"]
        assert report.commits == 3 and not report.skipped
        for name in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "README.md"):
            assert repo.files[name][0] == (tiny_run / name).read_bytes(), name
        assert (
            push_run("memory://published/tiny", "lab/streamed", api=HfApi(endpoint=hub.url, token=TOKEN)).commits == 0
        )


def test_follow_pushes_shards_as_they_finish_then_the_card(tiny_run, tmp_path) -> None:
    """`push --follow` on a run being generated: shards are committed as their records appear, the
    card and manifest after finalization, each file once."""
    import shutil
    import time

    growing = tmp_path / "growing"

    def publish_shard(name: str) -> None:  # in the order a run writes them: the record last
        for folder, suffix in (
            ("data", ".parquet"),
            ("manifests", ".parquet"),
            ("signatures", ".npz"),
            ("shards", ".json"),
        ):
            (growing / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy2(tiny_run / folder / f"{name}{suffix}", growing / folder / f"{name}{suffix}")

    names = sorted(p.stem for p in (tiny_run / "shards").glob("*.json"))
    growing.mkdir()
    with FakeHub(TOKEN) as hub:
        proc = subprocess.Popen(
            [str(CLI), "push", str(growing), "--repo", "lab/live", "--follow", "--poll", "0.5"],
            env=_env(hub, tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(2)  # rounds with no finished shard yet: it waits
            assert proc.poll() is None
            publish_shard(names[0])
            deadline = time.monotonic() + 120
            while "lab/live" not in hub.repos or f"data/{names[0]}.parquet" not in hub.repos["lab/live"].files:
                assert time.monotonic() < deadline and proc.poll() is None, "the first shard was never pushed"
                time.sleep(0.2)
            assert "README.md" not in hub.repos["lab/live"].files  # not before finalization
            publish_shard(names[1])
            for name in ("manifest.parquet", "config.yaml", "card/overview.png", "README.md"):
                (growing / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tiny_run / name, growing / name)
            out, err = proc.communicate(timeout=180)
        finally:
            proc.kill()
        assert proc.returncode == 0, out + err
        repo = hub.repos["lab/live"]
        for name in [f"data/{n}.parquet" for n in names] + ["manifest.parquet", "README.md", "card/overview.png"]:
            assert repo.files[name][0] == (tiny_run / name).read_bytes(), name
        assert all(n == 1 for n in repo.commits_per_path.values()), repo.commits_per_path
        assert TOKEN not in out + err
