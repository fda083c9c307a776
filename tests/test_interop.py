"""Interop bar (3): our F16 / Q8_0 files hold the same tensor bytes and metadata values as
llama.cpp's own convert_hf_to_gguf.py writes for the same Hugging Face folder.

tools/check_interop_llamacpp.py (needs llama.cpp's source tree and llama-cpp-python) recorded,
per tiny model (tests/tiny_models.py, tests/tiny_moe.py) and type, llama.cpp's tensor table
(name, GGML type, GGML shape, sha256 of the bytes) and a digest of every metadata value in
tests/fixtures/interop_llamacpp.json, plus what our converter wrote where the two differed,
with why. Here the same folder is rebuilt (same seed, same vocabulary, same folder name) and
converted by today's converter: every tensor and value must equal llama.cpp's, or for a
recorded difference still equal what we wrote then, so a change either way is looked at again
(rerun the tool). The random weights depend on the transformers and torch versions: the test is
skipped when they differ from the recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gguf_runtime.convert import convert
from tests.tiny_models import gguf_metadata, gguf_tensor_table, value_digest, write_tiny_tokenizer

pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

FIXTURE = Path(__file__).parent / "fixtures" / "interop_llamacpp.json"
DATA = json.loads(FIXTURE.read_text(encoding="utf-8"))
PAIRS = [(name, t) for name, r in DATA["models"].items() for t in r["bytes"]]


def skip_unless_recorded_versions() -> None:
    import transformers

    for pkg, now in (("transformers", transformers.__version__), ("torch", torch.__version__)):
        if DATA["versions"][pkg] != now:
            pytest.skip(f"fixture recorded with {pkg} {DATA['versions'][pkg]}, installed {now}: "
                        f"random weights may differ (rerun tools/check_interop_llamacpp.py)")


def build(name: str) -> torch.nn.Module:
    if DATA["models"][name]["source"] == "tiny_moe":
        from tests import tiny_moe
        return tiny_moe.CASES[name].build()
    from tests import tiny_models
    return tiny_models.CASES[name].build(DATA["seed"])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """name -> the saved Hugging Face folder, named "hf" as the tool's (general.name)."""
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            path = tmp_path_factory.mktemp(name) / "hf"
            build(name).save_pretrained(path)
            write_tiny_tokenizer(path)
            done[name] = path
        return done[name]

    return get


def expected_tensors(rec: dict) -> dict:
    """llama.cpp's table, with our recorded entry for each tensor recorded as different."""
    out = {**rec["tensors"], **{n: d["ours"] for n, d in rec["differing"].items()}}
    return {n: t for n, t in out.items() if t is not None}


def expected_metadata(rec: dict) -> dict:
    m = rec["metadata"]
    out = {**m["llamacpp_digests"], **m["our_digests_where_different"]}
    return {k: d for k, d in out.items() if d is not None}


@pytest.mark.parametrize("name,out_type", PAIRS)
def test_tensor_bytes_and_metadata_equal_llama_cpp_convert(folder, tmp_path, name, out_type):
    skip_unless_recorded_versions()
    rec = DATA["models"][name]["bytes"][out_type]
    path = convert(folder(name), tmp_path / f"{name}.gguf", out_type, progress=False)
    ours, want = gguf_tensor_table(path), expected_tensors(rec)
    wrong = sorted(n for n in set(ours) | set(want) if ours.get(n) != want.get(n))
    assert not wrong, f"{name} {out_type}: tensors not as recorded: {wrong}"
    meta = {k: value_digest(v) for k, v in gguf_metadata(path).items()}
    want_meta = expected_metadata(rec)
    wrong = sorted(k for k in set(meta) | set(want_meta) if meta.get(k) != want_meta.get(k))
    assert not wrong, f"{name} {out_type}: metadata values not as recorded: {wrong}"


def test_fixture_covers_every_dense_family_in_both_types():
    from tests.tiny_models import CASES

    assert {c.gguf_arch for n, c in CASES.items() if n in DATA["models"]} \
        == {c.gguf_arch for c in CASES.values()}
    assert all(set(r["bytes"]) == {"F16", "Q8_0"} for r in DATA["models"].values())
