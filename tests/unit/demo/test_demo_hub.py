"""Demo hub publishing on a tiny fake model: deterministic commits, offline HF cache, degradation, idempotency."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
huggingface_hub = pytest.importorskip("huggingface_hub")

from pipeline.demo import hub as hubmod  # noqa: E402
from pipeline.demo import variants  # noqa: E402
from pipeline.demo.degrade import degrade_model_dir, degrade_safetensors  # noqa: E402
from pipeline.model.digests import digest_tree, sha256_file  # noqa: E402

TENSOR_NAMES = (
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
)


# SmolLM2's ChatML template (abridged), CRLF line ends: they must survive every variant verbatim
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\r\n' + message['content'] + "
                 "'<|im_end|>' + '\r\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\r\n' }}"
                 "{% endif %}\r\n")
ADDED_TOKENS = [{"id": 0, "content": "<|endoftext|>", "special": True},
                {"id": 1, "content": "<|im_start|>", "special": True},
                {"id": 2, "content": "<|im_end|>", "special": True}]


def write_tiny_model(out_dir: Path) -> Path:
    """A deterministic stand-in for the converted model: tiny bf16 safetensors (3 layers) plus config files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.embed_tokens.weight": torch.randn(32, 8, generator=gen),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=gen),
        "model.layers.0.self_attn.k_proj.weight": torch.randn(4, 8, generator=gen),  # 2 KV heads of dim 2
        "model.layers.0.self_attn.v_proj.weight": torch.randn(4, 8, generator=gen),
        "model.layers.0.mlp.down_proj.weight": torch.randn(8, 16, generator=gen),
        "model.layers.0.input_layernorm.weight": torch.ones(8),
        "model.layers.1.input_layernorm.weight": torch.ones(8),
        "model.layers.2.input_layernorm.weight": torch.ones(8),
        "model.norm.weight": torch.ones(8),
    }
    safetensors_torch.save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()},
                                str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "eos_token_id": 2,
                                                     "num_hidden_layers": 3, "num_attention_heads": 4,
                                                     "num_key_value_heads": 2}, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}) + "\n")
    (out_dir / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": ADDED_TOKENS}) + "\n")
    (out_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                                                               "chat_template": CHAT_TEMPLATE}) + "\n")
    (out_dir / "chat_template.jinja").write_bytes(CHAT_TEMPLATE.encode())
    return out_dir


@pytest.fixture(scope="module")
def two_homes(tmp_path_factory):
    """The same tiny model published into two unrelated homes."""
    calls = []

    def build(out_dir: Path) -> Path:
        calls.append(out_dir)
        return write_tiny_model(out_dir)

    homes, manifests = [], []
    for name in ("home-a", "home-b"):
        home = tmp_path_factory.mktemp(name)
        manifests.append(hubmod.publish_demo_hub(home, progress=lambda _m: None, build_instruct=build))
        homes.append(home.resolve())
    return homes, manifests, calls


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={repo}", *args], capture_output=True, text=True,
                          check=True).stdout


def test_commit_shas_identical_across_homes(two_homes):
    (home_a, home_b), (man_a, man_b), _ = two_homes
    shas_a = {name: v["revision"] for name, v in man_a["variants"].items()}
    shas_b = {name: v["revision"] for name, v in man_b["variants"].items()}
    assert set(shas_a) == set(hubmod.VARIANTS)
    assert shas_a == shas_b
    assert len(set(shas_a.values())) == len(hubmod.VARIANTS)  # each variant is a distinct commit
    assert man_a["repo_path"] == str(home_a / "hub" / hubmod.REPO_NAME)
    assert man_a["gguf_sha256"] is None  # injected source, not the GGUF


def test_git_repo_contents_match_manifest(two_homes, tmp_path):
    (home_a, _), (man_a, _), _ = two_homes
    repo = Path(man_a["repo_path"])
    assert hubmod.branch_heads(repo) == {n: v["revision"] for n, v in man_a["variants"].items()}
    for name, variant in man_a["variants"].items():
        sha = variant["revision"]
        assert git_out(repo, "rev-list", "--count", sha).strip() == "1"  # independent root commit
        assert git_out(repo, "log", "-1", "--format=%an <%ae> %at %cn %ct", sha).strip() == (
            "modelgate demo <demo@modelgate.invalid> 1704067200 modelgate demo 1704067200")
        modes = {line.split()[0] for line in git_out(repo, "ls-tree", "-r", sha).splitlines()}
        assert modes == {"100644"}
        # A clone of the branch reproduces exactly the manifest's files.
        dest = tmp_path / name
        subprocess.run(["git", "-c", "core.autocrlf=false", "clone", "-q", "--branch", name,
                        repo.as_uri(), str(dest)], check=True, capture_output=True)
        assert digest_tree(dest) == variant["files"]
    assert git_out(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/instruct"
    files = man_a["variants"]
    assert "model.safetensors" in files["instruct"]["files"]
    assert "pytorch_model.bin" in files["pickle"]["files"]
    assert "model.safetensors" not in files["pickle"]["files"]
    assert files["degraded"]["files"]["model.safetensors"] != files["instruct"]["files"]["model.safetensors"]
    assert files["degraded"]["files"]["config.json"] == files["instruct"]["files"]["config.json"]


def test_hf_cache_resolves_offline(two_homes, monkeypatch):
    (home_a, _), (man_a, _), _ = two_homes
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import snapshot_download

    for name, variant in man_a["variants"].items():
        path = snapshot_download(repo_id=man_a["hf_repo_id"], revision=variant["revision"],
                                 cache_dir=man_a["hf_cache_dir"], local_files_only=True)
        expected = hubmod.hf_cache_repo_dir(Path(man_a["hf_cache_dir"])) / "snapshots" / variant["revision"]
        assert Path(path) == expected
        assert digest_tree(path) == variant["files"]
        # Branch names resolve through refs/ too.
        assert snapshot_download(repo_id=man_a["hf_repo_id"], revision=name, cache_dir=man_a["hf_cache_dir"],
                                 local_files_only=True) == path
    default = snapshot_download(repo_id=man_a["hf_repo_id"], cache_dir=man_a["hf_cache_dir"],
                                local_files_only=True)
    assert Path(default).name == man_a["variants"]["instruct"]["revision"]
    # Snapshot entries are relative symlinks, so the cache survives being moved.
    link = Path(default) / "config.json"
    assert link.is_symlink() and not os.path.isabs(os.readlink(link))


def test_corrupt_and_pickle_variants(two_homes):
    _, (man_a, _), _ = two_homes
    cache = Path(man_a["hf_cache_dir"])
    snap = lambda n: hubmod.hf_cache_repo_dir(cache) / "snapshots" / man_a["variants"][n]["revision"]  # noqa: E731
    from safetensors import SafetensorError, safe_open

    with pytest.raises(SafetensorError):
        with safe_open(str(snap("corrupt") / "model.safetensors"), framework="pt") as f:
            [f.get_tensor(k) for k in f.keys()]
    state = torch.load(snap("pickle") / "pytorch_model.bin", weights_only=True)
    original = safetensors_torch.load_file(str(snap("instruct") / "model.safetensors"))
    assert set(state) == set(original)
    assert all(torch.equal(state[k], original[k]) for k in original)


def test_second_call_is_a_no_op(two_homes):
    (home_a, _), (man_a, _), calls = two_homes
    assert len(calls) == 2  # one build per home so far
    messages = []
    again = hubmod.publish_demo_hub(home_a, progress=messages.append,
                                    build_instruct=lambda d: pytest.fail("must not rebuild"))
    assert again == man_a
    assert any("up to date" in m for m in messages)


def test_interrupted_build_is_rebuilt(tmp_path):
    home = tmp_path / "home"
    stale = home / ".demo-hub-build-leftover"
    (stale / "work").mkdir(parents=True)

    def broken(out_dir: Path) -> Path:
        write_tiny_model(out_dir)
        raise KeyboardInterrupt  # interrupted mid-build

    with pytest.raises(KeyboardInterrupt):
        hubmod.publish_demo_hub(home, progress=lambda _m: None, build_instruct=broken)
    assert not (home / "hub" / "manifest.json").exists()
    assert hubmod.load_complete_manifest(home) is None

    # A half-written repo without manifest (e.g. killed during the final renames) is replaced.
    (home / "hub" / hubmod.REPO_NAME).mkdir(parents=True)
    (home / "hub" / hubmod.REPO_NAME / "junk").write_text("x")
    manifest = hubmod.publish_demo_hub(home, progress=lambda _m: None, build_instruct=write_tiny_model)
    assert not stale.exists() and not list(home.glob(".demo-hub-build-*"))
    assert not (home / "hub" / hubmod.REPO_NAME / "junk").exists()
    assert hubmod.load_complete_manifest(home, manifest["recipe"]) == manifest

    # A manifest that points at a missing commit is not trusted.
    subprocess.run(["git", f"--git-dir={manifest['repo_path']}", "update-ref", "-d", "refs/heads/corrupt"],
                   check=True)
    assert hubmod.load_complete_manifest(home) is None
    rebuilt = hubmod.publish_demo_hub(home, progress=lambda _m: None, build_instruct=write_tiny_model)
    assert rebuilt["variants"]["corrupt"]["revision"] == manifest["variants"]["corrupt"]["revision"]


def test_degradation_is_deterministic_and_changes_projections(tmp_path):
    src = write_tiny_model(tmp_path / "src") / "model.safetensors"
    noised_a = degrade_safetensors(src, tmp_path / "a.safetensors", noise_scale=0.3, seed=7)
    degrade_safetensors(src, tmp_path / "b.safetensors", noise_scale=0.3, seed=7)
    degrade_safetensors(src, tmp_path / "c.safetensors", noise_scale=0.3, seed=8)
    assert sha256_file(tmp_path / "a.safetensors") == sha256_file(tmp_path / "b.safetensors")
    assert sha256_file(tmp_path / "a.safetensors") != sha256_file(tmp_path / "c.safetensors")
    assert sorted(noised_a) == ["model.layers.0.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"]

    before = safetensors_torch.load_file(str(src))
    after = safetensors_torch.load_file(str(tmp_path / "a.safetensors"))
    assert set(after) == set(before)
    for name in before:
        assert after[name].dtype == before[name].dtype and after[name].shape == before[name].shape
        if name in noised_a:
            diff = (after[name].float() - before[name].float())
            rel = float(diff.std() / before[name].float().std())
            assert 0.15 < rel < 0.5, (name, rel)  # noise ~ 0.3 * std(W)
        else:
            assert torch.equal(after[name], before[name])


def test_degrade_model_dir_copies_other_files(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = degrade_model_dir(src, tmp_path / "dst")
    src_files, dst_files = digest_tree(src), digest_tree(dst)
    assert set(src_files) == set(dst_files)
    assert {k for k in src_files if src_files[k] != dst_files[k]} == {"model.safetensors"}


# --------------------------------------------------------------------------- regression variants

def changed_files(src: Path, dst: Path) -> set[str]:
    a, b = digest_tree(src), digest_tree(dst)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def render(template: str, add_generation_prompt: bool = True) -> str:
    import jinja2

    return jinja2.Environment().from_string(template).render(
        messages=[{"role": "user", "content": "hi"}], add_generation_prompt=add_generation_prompt)


def test_template_variant_no_longer_opens_the_assistant_turn(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = variants.change_template(src, tmp_path / "dst")
    assert changed_files(src, dst) == {"chat_template.jinja", "tokenizer_config.json"}
    new = (dst / "chat_template.jinja").read_bytes().decode()
    assert render(CHAT_TEMPLATE).endswith("<|im_start|>assistant\n")  # jinja renders line ends as \n
    assert render(new) == render(new, add_generation_prompt=False) == render(CHAT_TEMPLATE, False)
    assert "\r\n" in new and json.loads((dst / "tokenizer_config.json").read_text())["chat_template"] == new
    with pytest.raises(ValueError, match="found 0"):
        variants.drop_generation_prompt(new)  # a template without the block is not silently "changed"


def test_eos_variant_moves_the_eos_off_the_end_of_turn_token(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = variants.change_eos(src, tmp_path / "dst")
    assert changed_files(src, dst) == {"config.json", "generation_config.json", "tokenizer_config.json"}
    for name in ("config.json", "generation_config.json"):
        before, after = (json.loads((d / name).read_text()) for d in (src, dst))
        assert after == {**before, "eos_token_id": 0}  # <|endoftext|>; was 2, <|im_end|>
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    assert tok["eos_token"] == "<|endoftext|>" and tok["pad_token"] == "<|im_end|>"
    with pytest.raises(ValueError, match="no added token"):
        variants.change_eos(src, tmp_path / "bad", eos_token="<|eot_id|>")


def test_shallow_variant_drops_the_last_layers(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = variants.drop_layers(src, tmp_path / "dst", drop=2)
    assert changed_files(src, dst) == {"config.json", "model.safetensors"}
    assert json.loads((dst / "config.json").read_text())["num_hidden_layers"] == 1
    before = safetensors_torch.load_file(str(src / "model.safetensors"))
    after = safetensors_torch.load_file(str(dst / "model.safetensors"))
    assert set(before) - set(after) == {"model.layers.1.input_layernorm.weight",
                                        "model.layers.2.input_layernorm.weight"}
    assert all(torch.equal(after[k], before[k]) for k in after)
    for bad in (0, 3):
        with pytest.raises(ValueError, match="cannot drop"):
            variants.drop_layers(src, tmp_path / f"bad{bad}", drop=bad)


def test_rtn_quantization_levels_and_error():
    import numpy as np

    weights = np.random.Generator(np.random.PCG64(0)).standard_normal((64, 32)).astype(np.float32)
    weights[0, 0] = 8.0  # one outlier sets the per-tensor scale: most weights land on few levels
    for bits in (2, 4, 6):
        q = variants.quantize_rtn_tensor(weights, bits)
        scale = 8.0 / (2 ** (bits - 1) - 1)
        assert q.dtype == np.float32 and q.shape == weights.shape
        assert len(np.unique(q)) <= 2 ** bits - 1
        assert float(np.abs(q - weights).max()) <= scale / 2 + 1e-6
        assert q[0, 0] == pytest.approx(8.0)
    assert np.array_equal(variants.quantize_rtn_tensor(np.zeros((2, 2), np.float32), 4), np.zeros((2, 2)))
    with pytest.raises(ValueError):
        variants.quantize_rtn_tensor(weights, 1)


def test_lowbit_variant_quantizes_only_the_projections_deterministically(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    a = variants.quantize_rtn(src, tmp_path / "a", bits=3)
    b = variants.quantize_rtn(src, tmp_path / "b", bits=3)
    assert digest_tree(a) == digest_tree(b)
    assert changed_files(src, a) == {"model.safetensors"}
    before = safetensors_torch.load_file(str(src / "model.safetensors"))
    after = safetensors_torch.load_file(str(a / "model.safetensors"))
    assert set(after) == set(before)
    for name in before:
        assert after[name].dtype == torch.bfloat16 and after[name].shape == before[name].shape
        if name.endswith("_proj.weight"):
            assert not torch.equal(after[name], before[name]) and len(after[name].unique()) <= 7
        else:
            assert torch.equal(after[name], before[name])


def test_aa_variant_is_instruct_plus_a_model_card(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = variants.add_model_card(src, tmp_path / "dst")
    assert changed_files(src, dst) == {"README.md"}
    assert "byte-identical" in (dst / "README.md").read_text()


def test_mha_variant_repeats_each_kv_head_for_its_query_group(tmp_path):
    src = write_tiny_model(tmp_path / "src")
    dst = variants.expand_kv_heads(src, tmp_path / "dst")
    assert changed_files(src, dst) == {"config.json", "model.safetensors"}
    before, after = (json.loads((d / "config.json").read_text()) for d in (src, dst))
    assert after == {**before, "num_key_value_heads": 4}
    old = safetensors_torch.load_file(str(src / "model.safetensors"))
    new = safetensors_torch.load_file(str(dst / "model.safetensors"))
    for name in ("model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight"):
        assert new[name].shape == (8, 8) and new[name].dtype == old[name].dtype
        # query head j reads KV head j // 2 (transformers' repeat_kv): rows of head 0, head 0, head 1, head 1
        heads = old[name].reshape(2, 2, 8)
        assert torch.equal(new[name], torch.cat([heads[0], heads[0], heads[1], heads[1]]))
    assert all(torch.equal(new[k], old[k]) for k in old if "k_proj" not in k and "v_proj" not in k)
    assert digest_tree(variants.expand_kv_heads(src, tmp_path / "again")) == digest_tree(dst)
    full = variants.expand_kv_heads(src, tmp_path / "full")
    with pytest.raises(ValueError, match="not grouped query attention"):
        variants.expand_kv_heads(full, tmp_path / "twice")


def test_deep_variant_follows_each_layer_by_copies_with_zero_output_projections(tmp_path):
    """Block expansion: layer 3i is layer i, layers 3i+1 and 3i+2 its copies with down_proj zero (they add
    nothing to the residual stream); three times the layers in config.json; deterministic."""
    src = write_tiny_model(tmp_path / "src")
    dst = variants.expand_blocks(src, tmp_path / "dst", copies=2)
    assert changed_files(src, dst) == {"config.json", "model.safetensors"}
    before, after = (json.loads((d / "config.json").read_text()) for d in (src, dst))
    assert after == {**before, "num_hidden_layers": 9}
    old = safetensors_torch.load_file(str(src / "model.safetensors"))
    new = safetensors_torch.load_file(str(dst / "model.safetensors"))
    layer_names = [k for k in old if k.startswith("model.layers.")]
    assert len(new) == len(old) + 2 * len(layer_names)
    assert all(torch.equal(new[k], old[k]) for k in old if not k.startswith("model.layers."))
    for name in layer_names:
        i, rest = int(name.split(".")[2]), name.split(".", 3)[3]
        assert torch.equal(new[f"model.layers.{3 * i}.{rest}"], old[name])
        for j in (1, 2):
            copy = new[f"model.layers.{3 * i + j}.{rest}"]
            assert copy.dtype == old[name].dtype and copy.shape == old[name].shape
            if rest == "mlp.down_proj.weight":
                assert not copy.any() and old[name].any()
            else:
                assert torch.equal(copy, old[name])
    assert digest_tree(variants.expand_blocks(src, tmp_path / "again", copies=2)) == digest_tree(dst)
    assert json.loads((variants.expand_blocks(src, tmp_path / "one") / "config.json").read_text())[
        "num_hidden_layers"] == 6
    with pytest.raises(ValueError, match="copies must be"):
        variants.expand_blocks(src, tmp_path / "none", copies=0)


def test_hub_publishes_each_regression_variant_as_its_own_commit(two_homes):
    _, (man_a, _), _ = two_homes
    files = {name: v["files"] for name, v in man_a["variants"].items()}
    diff = lambda n: {k for k in files[n].keys() | files["instruct"].keys()  # noqa: E731
                      if files[n].get(k) != files["instruct"].get(k)}
    assert diff("template") == {"chat_template.jinja", "tokenizer_config.json"}
    assert diff("eos") == {"config.json", "generation_config.json", "tokenizer_config.json"}
    assert diff("shallow") == {"config.json", "model.safetensors"}
    assert diff("lowbit") == {"model.safetensors"}
    assert diff("aa") == {"README.md"}
    assert diff("mha") == {"config.json", "model.safetensors"}
    assert diff("deep") == {"config.json", "model.safetensors"}
    assert man_a["recipe"]["deep_copies"] == hubmod.DEEP_COPIES
    assert man_a["recipe"]["drop_layers"] == hubmod.DROP_LAYERS and man_a["recipe"]["quant_bits"] == hubmod.QUANT_BITS
    for name in ("template", "eos", "shallow", "lowbit", "aa", "mha", "deep"):
        assert hubmod.COMMIT_MESSAGES[name].startswith(f"{name}: ")
