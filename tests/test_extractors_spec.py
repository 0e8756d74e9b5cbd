"""Registry, spec fingerprints, random-weight labelling and ``avzsl extractors list``."""

from __future__ import annotations

import json

import pytest

from extractors.registry import build_extractor, list_specs, names
from workflows.cli import main as cli_main


def test_registry_lists_every_model_in_both_modes():
    assert names() == ["ast", "c3d", "hf", "vggish", "vit"]
    specs = list_specs()
    assert {(s.name, s.mode) for s in specs} == {(n, m) for n in names() for m in ("clean", "benchmark")}
    by_key = {(s.name, s.mode): s for s in specs}
    c3d = by_key[("c3d", "benchmark")]
    assert (c3d.sample_rate, c3d.window, c3d.hop, c3d.output_dim) == (25.0, 16, 16, 4096)
    assert "BGR" in c3d.preprocessing and "RGB" in by_key[("c3d", "clean")].preprocessing
    assert by_key[("vggish", "benchmark")].output_dtype == "uint8"
    assert by_key[("vggish", "clean")].output_dtype == "float32"
    assert len(by_key[("vggish", "clean")].state_dict_shapes) == 18 and len(c3d.state_dict_shapes) == 22
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        build_extractor("nope", weights="random")
    with pytest.raises(ValueError, match="mode"):
        build_extractor("c3d", weights="random", mode="compat")


def test_fingerprint_tracks_everything_that_changes_the_output():
    spec = list_specs("clean")[1]
    assert spec.name == "c3d" and not spec.random_weights
    assert spec.fingerprint() == list_specs("clean")[1].fingerprint()  # stable
    variants = {
        spec.fingerprint(),
        spec.with_weights("random:seed=0").fingerprint(),
        spec.with_weights("random:seed=1").fingerprint(),
        spec.with_weights("sha256:c3d.pickle=0123").fingerprint(),
        list_specs("benchmark")[1].fingerprint(),
    }
    assert len(variants) == 5


def test_random_weights_are_labelled_everywhere():
    vggish = build_extractor("vggish", weights="random")
    assert vggish.spec.random_weights and vggish.spec.weights_id == "random:seed=0"
    assert "RANDOM WEIGHTS" in vggish.describe()
    record = vggish.spec.to_dict()
    assert record["random_weights"] is True and record["weights_id"] == "random:seed=0"
    json.dumps(record)  # stores write it as JSON
    with pytest.raises(ValueError, match="'random'"):
        build_extractor("vggish", weights="")


def test_cli_lists_specs(capsys):
    assert cli_main(["extractors", "list", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in records} == {"ast", "c3d", "hf", "vggish", "vit"}
    assert all(
        {"sample_rate", "window", "hop", "output_dim", "weights_files", "mode"} <= set(r) for r in records
    )
    assert cli_main(["extractors", "list", "--mode", "benchmark"]) == 0
    text = capsys.readouterr().out
    assert "c3d [benchmark] visual: 25 fps, window 16 / hop 16 frames" in text
    assert "uint8 truncation" in text and "c3d.pickle" in text
