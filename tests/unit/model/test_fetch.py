import json
import os

import pytest

import pipeline.model.fetch as fetch_module
from pipeline.config.release import Pin
from pipeline.errors import DigestMismatch, PinError, UnsafeModel
from pipeline.model import sources
from pipeline.model.digests import digest_tree
from pipeline.model.fetch import MARKER, fetch
from tests.support.git import git
from tests.support.model_repo import build_model_repo

MODEL = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "model.safetensors": b"\0" * 4096,
         "tokenizer/tokenizer.json": b"{}"}


@pytest.fixture
def repo(tmp_path):
    return build_model_repo(tmp_path / "hub", MODEL)


def test_fetch_verifies_every_file_and_caches(repo, tmp_path, monkeypatch):
    path, sha, digests = repo
    assert set(digests) == set(MODEL) and digest_tree(path) == digests  # .git is not part of the model
    pin = Pin("git", str(path), sha, digests)
    got = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert not got.cache_hit and got.verification is None  # hashed while it was verified
    assert digest_tree(got.path, exclude=(".git", MARKER)) == digests
    assert not (got.path / ".git").exists()
    # the cache is read-only on disk
    assert all(((got.path / name).stat().st_mode & 0o777) == 0o444 for name in digests)
    assert (got.path.stat().st_mode & 0o777) == 0o555
    # a cache hit downloads nothing, but hashes every file again (a gate never serves bytes it did not hash)
    monkeypatch.setattr(sources, "download", lambda *a, **k: pytest.fail("downloaded again"))
    hashed = []
    real = fetch_module.sha256_file
    monkeypatch.setattr(fetch_module, "sha256_file", lambda p: hashed.append(p) or real(p))
    again = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert again.cache_hit and again.path == got.path
    assert sorted(hashed) == sorted(got.path / name for name in digests)
    assert again.verified() is not None and again.verification.bytes == sum(map(len, MODEL.values()))


def test_changed_cache_file_is_exit_2_naming_it_even_with_size_and_mtime_kept(repo, tmp_path):
    """One byte changed in a verified cache file, size and mtime restored: the ctime gives it away at once."""
    path, sha, digests = repo
    pin = Pin("git", str(path), sha, digests)
    got = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    target = got.path / "model.safetensors"
    before = target.stat()
    target.chmod(0o644)
    target.write_bytes(b"\1" + b"\0" * 4095)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(DigestMismatch, match="'model.safetensors' in the model cache changed since it was verified") \
            as info:
        fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert info.value.exit_code == 2 and info.value.path == "candidate.files.model.safetensors"


def change_behind_the_marker(model_dir, byte):
    """Rewrite model.safetensors with `byte` and the cache marker's stat entry to vouch for the new bytes."""
    target = model_dir / "model.safetensors"
    target.chmod(0o644)
    target.write_bytes(byte * 4096)
    marker = json.loads((model_dir / MARKER).read_text())
    st = target.stat()
    marker["stats"]["model.safetensors"] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    (model_dir / MARKER).chmod(0o644)
    (model_dir / MARKER).write_text(json.dumps(marker))


def test_background_hash_catches_a_change_the_marker_hides(repo, tmp_path):
    """Even with the marker rewritten to vouch for changed bytes, the gate's own hash (in the background, while
    vLLM boots) finds them before any result counts."""
    path, sha, digests = repo
    pin = Pin("git", str(path), sha, digests)
    got = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    change_behind_the_marker(got.path, b"\2")
    hit = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None, background=True)
    assert hit.cache_hit and hit.verification is not None
    with pytest.raises(DigestMismatch, match="changed since it was verified"):
        hit.verified()


def test_a_source_that_lost_the_pinned_commit_is_refused_even_on_a_cache_hit(repo, tmp_path):
    """The cache is keyed by content, not by source: a hit never skips asking the source for the commit."""
    path, sha, digests = repo
    pin = Pin("git", str(path), sha, digests)
    fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    other = build_model_repo(tmp_path / "other", {"README.md": b"another model"}).path
    with pytest.raises(PinError, match=f"commit {sha} does not exist in") as info:
        fetch(pin, str(other), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert info.value.exit_code == 2
    url = other.resolve().as_uri()
    with pytest.raises(PinError, match=f"commit {sha} does not exist in '{url}'"):
        fetch(Pin("git", url, sha, digests), url, tmp_path / "home", file="release.yaml", progress=lambda m: None)
    # the original repository rewritten so that the commit is gone (a force-push, a gc)
    git(path, "commit", "-q", "--amend", "-m", "rewritten")
    git(path, "reflog", "expire", "--expire=now", "--all")
    git(path, "gc", "-q", "--prune=now")
    with pytest.raises(PinError, match="does not exist"):
        fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)


def test_digest_mismatch_names_the_file(repo, tmp_path):
    path, sha, digests = repo
    lock = {**digests, "model.safetensors": "0" * 64}
    with pytest.raises(DigestMismatch) as info:
        fetch(Pin("git", str(path), sha, lock), str(path), tmp_path / "home", file="release.yaml",
              progress=lambda m: None)
    assert info.value.exit_code == 2
    assert "model.safetensors" in str(info.value) and info.value.path == "candidate.files.model.safetensors"
    assert not any((tmp_path / "home" / "models").iterdir())  # nothing half-verified is left


def test_missing_and_extra_files_are_refused(repo, tmp_path):
    path, sha, digests = repo
    with pytest.raises(DigestMismatch, match="'extra.txt' is locked but missing"):
        fetch(Pin("git", str(path), sha, {**digests, "extra.txt": "1" * 64}), str(path), tmp_path / "h",
              file="r.yaml", progress=lambda m: None)
    partial = {k: v for k, v in digests.items() if k != "config.json"}
    with pytest.raises(DigestMismatch, match="not in the lock: config.json"):
        fetch(Pin("git", str(path), sha, partial), str(path), tmp_path / "h", file="r.yaml", progress=lambda m: None)


def test_unknown_commit_and_unreachable_repo(repo, tmp_path):
    path, sha, digests = repo
    with pytest.raises(PinError, match="does not exist"):
        fetch(Pin("git", str(path), "f" * 40, digests), str(path), tmp_path / "h", file="r.yaml",
              progress=lambda m: None)
    with pytest.raises(PinError, match="cannot fetch from git repository"):
        fetch(Pin("git", "x", sha, digests), str(tmp_path / "nowhere"), tmp_path / "h", file="r.yaml",
              progress=lambda m: None)


def test_empty_lock_is_refused(repo, tmp_path):
    path, sha, _ = repo
    with pytest.raises(PinError, match="modelgate lock"):
        fetch(Pin("git", str(path), sha, {}), str(path), tmp_path / "h", file="r.yaml", progress=lambda m: None)


def test_pickle_weights_refused_unless_allowed(tmp_path):
    path, sha, digests = build_model_repo(tmp_path / "hub", {"config.json": b"{}", "pytorch_model.bin": b"PK"})
    with pytest.raises(UnsafeModel, match="pytorch_model.bin refused"):
        fetch(Pin("git", str(path), sha, digests), str(path), tmp_path / "h", file="r.yaml", progress=lambda m: None)
    ok = fetch(Pin("git", str(path), sha, digests, allow_pickle=True), str(path), tmp_path / "h", file="r.yaml",
               progress=lambda m: None)
    assert (ok.path / "pytorch_model.bin").exists()


def test_remote_code_refused_unless_allowlisted(tmp_path):
    config = json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling_x.XModel"}}).encode()
    path, sha, digests = build_model_repo(tmp_path / "hub", {"config.json": config, "modeling_x.py": b"import os"})
    with pytest.raises(UnsafeModel, match="needs remote code"):
        fetch(Pin("git", str(path), sha, digests), str(path), tmp_path / "h", file="r.yaml", progress=lambda m: None)
    trusting = Pin("git", str(path), sha, digests, trust_remote_code=True)
    with pytest.raises(UnsafeModel, match="not in security.remote_code_allowlist"):
        fetch(trusting, str(path), tmp_path / "h", file="r.yaml", progress=lambda m: None)
    ok = fetch(trusting, str(path), tmp_path / "h", file="r.yaml", allowlist=(str(path),), progress=lambda m: None)
    assert (ok.path / "modeling_x.py").exists()


def test_git_url_is_fetched_by_commit(repo, tmp_path):
    """A URL (here file://) goes through `git fetch --depth 1 <url> <sha>`, not the local archive path."""
    path, sha, digests = repo
    url = path.resolve().as_uri()
    got = fetch(Pin("git", url, sha, digests), url, tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert digest_tree(got.path, exclude=(MARKER,)) == digests
    with pytest.raises(PinError, match="does not exist"):
        fetch(Pin("git", url, "e" * 40, digests), url, tmp_path / "home", file="release.yaml", progress=lambda m: None)


def test_huggingface_source_offline_from_hf_cache_layout(tmp_path, monkeypatch):
    """snapshot_download at the exact commit, offline, against a directory in the HF cache layout."""
    from pipeline.demo.hub import add_to_hf_cache, hf_cache_repo_dir

    src = tmp_path / "src"
    for name, data in MODEL.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    digests = digest_tree(src)
    sha = "c" * 40
    cache = tmp_path / "hf-cache"
    add_to_hf_cache(hf_cache_repo_dir(cache, "acme/support-model"), src, sha, refs=("main",))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    pin = Pin("huggingface", "acme/support-model", sha, digests)
    got = fetch(pin, pin.repo, tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert digest_tree(got.path, exclude=(MARKER,)) == digests
    from pipeline.errors import InfraError

    with pytest.raises(InfraError, match="not in the local HF cache"):
        fetch(Pin("huggingface", "acme/support-model", "d" * 40, digests), "acme/support-model", tmp_path / "home",
              file="release.yaml", progress=lambda m: None)


def test_huggingface_source_confirms_the_revision_and_its_file_list_online(tmp_path, monkeypatch):
    """Online, the Hub is asked for the revision's file list (no weights): a revision it does not serve, or one
    with another file list, is bad input. The Hub here is a local server answering like huggingface.co's API."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    sha = "a" * 40
    served = {"acme/m": {sha: sorted(MODEL)}, "acme/other": {sha: ["config.json"]}}
    asked = []

    class Hub(BaseHTTPRequestHandler):
        def do_GET(self):  # /api/models/<org>/<name>/revision/<rev>
            asked.append(self.path)
            parts = self.path.split("?")[0].strip("/").split("/")
            repo, rev = "/".join(parts[2:4]), parts[5] if len(parts) > 5 else ""
            files = served.get(repo, {}).get(rev)
            if files is None:
                code = "RevisionNotFound" if repo in served else "RepoNotFound"
                body = json.dumps({"error": code}).encode()
                self.send_response(404)
                self.send_header("X-Error-Code", code)
            else:
                body = json.dumps({"id": repo, "sha": rev, "siblings": [{"rfilename": f} for f in files]}).encode()
                self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once at import; the suite runs offline
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        digests = {name: "0" * 64 for name in MODEL}
        sources.confirm_revision("acme/m", Pin("huggingface", "acme/m", sha, digests), file="r.yaml")
        assert asked and all(p.startswith(f"/api/models/acme/m/revision/{sha}") for p in asked)
        with pytest.raises(PinError, match=f"revision {'b' * 40} not found in 'acme/m'") as info:
            sources.confirm_revision("acme/m", Pin("huggingface", "acme/m", "b" * 40, digests), file="r.yaml")
        assert info.value.exit_code == 2
        with pytest.raises(PinError, match="serves a different file list than the lock"):
            sources.confirm_revision("acme/other", Pin("huggingface", "acme/other", sha, digests), file="r.yaml")
        with pytest.raises(PinError, match="repository 'acme/gone' not found"):
            sources.confirm_revision("acme/gone", Pin("huggingface", "acme/gone", sha, digests), file="r.yaml")
    finally:
        server.shutdown()


def test_a_server_that_fails_on_changed_cached_bytes_is_reported_as_the_changed_file(repo, tmp_path, monkeypatch,
                                                                                     write_release):
    """vLLM failing to start on bytes changed behind the marker is not an infrastructure error: the serve stage
    waits for the gate's own hash and reports the changed file (exit 2)."""
    from pipeline.config.release import load_release
    from pipeline.errors import InfraError
    from pipeline.gate.context import GateContext
    from pipeline.gate.stages import serve
    from tests.support.releases import VALID_RELEASE

    path, sha, digests = repo
    pin = Pin("git", str(path), sha, digests)
    got = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    change_behind_the_marker(got.path, b"\3")
    hit = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None, background=True)

    class FailingServer:
        def __init__(self, *args, **kwargs):
            pass

        def start(self, on_started=None):
            raise InfraError("vLLM exited with code 1 during start-up")

        def stop(self):
            pass

    monkeypatch.setattr(serve, "VllmServer", FailingServer)
    ctx = GateContext(release=load_release(write_release(VALID_RELEASE)), run_dir=tmp_path / "run",
                      home=tmp_path / "home")
    ctx.model_dir = hit
    with pytest.raises(DigestMismatch, match="'model.safetensors' in the model cache changed since it was verified"):
        serve.run(ctx)
    ctx.model_dir = fetch(Pin("git", str(path), sha, digests), str(path), tmp_path / "home2", file="release.yaml",
                          progress=lambda m: None)  # bytes as locked: the server's own error stands
    with pytest.raises(InfraError, match="vLLM exited with code 1"):
        serve.run(ctx)
    ctx.cleanup.close()
