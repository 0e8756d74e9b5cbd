"""VGGish: key table, independent numpy log-mel parity, example counts on the samples, variants, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractors.base import Window
from extractors.registry import build_extractor
from extractors.vggish import LogMel, expected_state_dict, quantize
from extractors.weights import WeightsError
from pipeline.decode.types import AudioClip
from tests.extractor_helpers import sample_audio, save_zero_checkpoint


def numpy_log_mel(wave: np.ndarray) -> np.ndarray:
    """The published VGGish front-end written independently in float64 numpy (docs/extractors.md)."""
    win, hop, nfft, sr = 400, 160, 512, 16000
    n_frames = 1 + (len(wave) - win) // hop
    frames = np.stack([wave[i * hop : i * hop + win] for i in range(n_frames)]).astype(np.float64)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic
    spectrum = np.abs(np.fft.rfft(frames * hann, n=nfft))

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    bins = mel(np.linspace(0, sr / 2, nfft // 2 + 1))
    edges = np.linspace(mel(125.0), mel(7500.0), 64 + 2)
    weights = np.zeros((nfft // 2 + 1, 64))
    for i in range(64):
        lo, centre, hi = edges[i : i + 3]
        weights[:, i] = np.maximum(0.0, np.minimum((bins - lo) / (centre - lo), (hi - bins) / (hi - centre)))
    weights[0, :] = 0.0
    return np.log(spectrum @ weights + 0.01)


def test_key_table_matches_torchvggish_checkpoint():
    table = expected_state_dict()
    assert len(table) == 18
    assert table["features.0.weight"] == (64, 1, 3, 3)
    assert table["features.13.weight"] == (512, 512, 3, 3)
    assert table["embeddings.0.weight"] == (4096, 12288)
    assert table["embeddings.4.weight"] == (128, 4096)
    assert all(
        table[k.replace("weight", "bias")] == (v[0],) for k, v in table.items() if k.endswith("weight")
    )
    model = build_extractor("vggish", weights="random")
    assert {k: tuple(v.shape) for k, v in model.net.state_dict().items()} == table
    assert sum(p.numel() for p in model.net.parameters()) == 72_141_184


def test_log_mel_matches_numpy_reference_on_real_audio(sample_videos):
    wave = sample_audio(str(sample_videos["v_GGSY1Qvo990"]))[: 16000 * 3]
    ours = LogMel()(torch.from_numpy(wave)[None]).numpy()[0]
    reference = numpy_log_mel(wave)
    assert ours.shape == reference.shape == (1 + (len(wave) - 400) // 160, 64)
    assert np.abs(ours - reference).max() <= 1e-4


@pytest.mark.parametrize(("stem", "examples"), [("v_GGSY1Qvo990", 18), ("v_ZNVhz7ctTq0", 14)])
def test_example_counts_on_samples(sample_videos, stem, examples):
    extractor = build_extractor("vggish", weights="random", mode="benchmark")
    clip = AudioClip(sample_audio(str(sample_videos[stem])), 16000)
    windows = list(extractor.windows_from_audio(clip))
    assert len(windows) == examples
    assert [w.start_s for w in windows[:3]] == pytest.approx([0.0, 0.96, 1.92])
    assert windows[-1].end_s == pytest.approx(0.96 * examples)
    # each example is 96 frames of the whole-clip framing: identical to slicing the full log-mel
    full = LogMel()(torch.from_numpy(clip.samples)[None])[0]
    prepared = extractor.prepare(windows[-2:])
    assert torch.allclose(prepared[1, 0], full[96 * (examples - 1) : 96 * examples], atol=1e-5)


def test_short_audio_gives_no_example_and_custom_hop():
    short = AudioClip(np.zeros(15599, np.float32), 16000)  # < 0.975 s (docs/extractors.md step 5)
    assert list(build_extractor("vggish", weights="random").windows_from_audio(short)) == []
    clip = AudioClip(np.zeros(16000 * 3, np.float32), 16000)
    hop = build_extractor("vggish", weights="random", hop_s=0.32)
    assert len(list(hop.windows_from_audio(clip))) == 1 + (48000 - 15600) // 5120
    with pytest.raises(ValueError, match="benchmark mode"):
        build_extractor("vggish", weights="random", mode="benchmark", hop_s=0.32)


def test_variants_relu_and_quantisation():
    wave = torch.from_numpy(np.random.default_rng(0).normal(0, 0.1, 15600).astype(np.float32))
    windows = [Window(wave, 0.0, 0.96, 15600)]
    tf = build_extractor("vggish", weights="random", variant="tf")
    vf = build_extractor("vggish", weights="random", variant="vf")
    pre, post = tf.embed(windows), vf.embed(windows)
    assert (pre < 0).any()  # pre-ReLU keeps negatives
    assert torch.equal(post, pre.clamp(min=0))  # same seeded weights: the only difference is the ReLU
    bench = build_extractor("vggish", weights="random", mode="benchmark")
    assert bench.spec.output_dtype == "uint8" and dict(bench.spec.options)["variant"] == "avgzsl"
    out = bench.finalize(bench.embed(windows).numpy())
    assert out.dtype == np.uint8 and out.shape == (1, 128)


def test_quantize_truncates_like_tensorflow():
    eye, zeros = np.eye(128), np.zeros(128)
    values = np.zeros((1, 128))
    values[0, :4] = [-3.0, 2.5, 0.0, 0.999]  # clipped low, clipped high, middle, a fractional step
    q = quantize(values, eye, zeros)[0]
    assert q[:4].tolist() == [
        0,
        255,
        127,
        int((0.999 + 2) * 255 / 4),
    ]  # 127.5 -> 127: truncation, not rounding


def test_strict_loading_real_shapes_tcvrick_names_and_pca(tmp_path):
    table = expected_state_dict()
    path = save_zero_checkpoint(table, tmp_path / "vggish-10086976.pth")
    rng = np.random.default_rng(1)
    np.savez(
        tmp_path / "vggish_pca_params.npz",
        pca_eigen_vectors=rng.normal(size=(128, 128)),
        pca_means=np.zeros(128),
    )
    model = build_extractor("vggish", weights=tmp_path, mode="benchmark")
    assert not model.spec.random_weights
    assert (
        "vggish-10086976.pth=" in model.spec.weights_id and "vggish_pca_params.npz=" in model.spec.weights_id
    )
    tcvrick = tmp_path / "port" / "vggish.pth"
    tcvrick.parent.mkdir()
    save_zero_checkpoint(table, tcvrick, lambda s: {k.replace("embeddings.", "fc."): v for k, v in s.items()})
    assert build_extractor("vggish", weights=tcvrick).spec.weights_id.startswith("sha256:")
    # the torchvggish PCA .pth holds numpy arrays: read with weights_only=True and numpy allowed
    torch.save({"pca_eigen_vectors": np.eye(128), "pca_means": np.zeros(128)}, tmp_path / "pca.pth")
    loaded = build_extractor("vggish", weights=path, variant="avgzsl", pca_params=tmp_path / "pca.pth")
    assert np.array_equal(loaded.pca[0], np.eye(128))
    with pytest.raises(WeightsError, match="vggish_pca_params"):
        build_extractor("vggish", weights=tcvrick, variant="avgzsl")  # no PCA file beside it


def test_strict_loading_errors(tmp_path):
    with pytest.raises(WeightsError, match=r"vggish-10086976\.pth.*torchvggish"):
        build_extractor("vggish", weights=tmp_path / "nowhere" / "vggish-10086976.pth")
    table = expected_state_dict()
    renamed = save_zero_checkpoint(
        table,
        tmp_path / "a.pth",
        lambda s: {("feat.0.weight" if k == "features.0.weight" else k): v for k, v in s.items()},
    )
    with pytest.raises(
        WeightsError, match=r"missing keys \[features\.0\.weight\].*unexpected keys \[feat\.0"
    ):
        build_extractor("vggish", weights=renamed)
    table_bad = dict(table, **{"embeddings.4.weight": (256, 4096)})
    wrong = save_zero_checkpoint(table_bad, tmp_path / "b.pth")
    with pytest.raises(WeightsError, match=r"embeddings\.4\.weight: checkpoint \(256, 4096\)"):
        build_extractor("vggish", weights=wrong)
