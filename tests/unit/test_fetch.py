import json

import pytest

import pipeline.model.fetch as fetch_module
from pipeline.config.release import Pin
from pipeline.errors import DigestMismatch, PinError, UnsafeModel
from pipeline.model import sources
from pipeline.model.digests import digest_tree
from pipeline.model.fetch import MARKER, fetch
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
    assert not got.cache_hit
    assert digest_tree(got.path, exclude=(".git", MARKER)) == digests
    assert not (got.path / ".git").exists()
    # a cache hit downloads nothing and hashes nothing: a stat() per file
    monkeypatch.setattr(sources, "download", lambda *a, **k: pytest.fail("downloaded again"))
    monkeypatch.setattr(fetch_module, "sha256_file", lambda *a: pytest.fail("hashed again"))
    again = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert again.cache_hit and again.path == got.path


def test_tampered_cache_is_rehashed_and_refetched(repo, tmp_path):
    path, sha, digests = repo
    pin = Pin("git", str(path), sha, digests)
    got = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    (got.path / "model.safetensors").write_bytes(b"\1" * 4096)
    again = fetch(pin, str(path), tmp_path / "home", file="release.yaml", progress=lambda m: None)
    assert not again.cache_hit
    assert digest_tree(again.path, exclude=(MARKER,))["model.safetensors"] == digests["model.safetensors"]


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
