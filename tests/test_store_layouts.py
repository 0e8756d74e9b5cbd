"""Exports the reference code loads: AV-GZSL h5/pkl read back by faithful copies of AVCA's and TCaF's readers,
video_features npy imports, and the random-weights label kept through export and import."""

from __future__ import annotations

import json
import pickle
import re
import warnings
import zlib
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.manifest import VideoManifest
from pipeline.store import FeatureStore, StoreError, verify_store
from pipeline.store.layouts import EXPORT_INFO, export_stores, import_layout

CLASSES = ["Cat", "Dog", "Eel", "Fox"]
# The loaders' dataset types and the split folders each reads (AVCA/TCaF src/dataset.py get_data_by_modality).
LOADER_SPLITS = {
    "train": ["stage_1_train"],
    "val": ["stage_1_val_seen", "stage_1_val_unseen"],
    "train_val": ["stage_1_train", "stage_1_val_seen", "stage_1_val_unseen"],
    "test": ["stage_2_test_seen", "stage_2_test_unseen"],
}


# ------------------------------------------------------------------ the reference readers, re-implemented
def avca_read_dataset(root: Path, dataset_type: str) -> dict:
    """AVCA-GZSL ``VGGSoundDataset.read_dataset`` (audio and video; text left out) with ``read_features``
    from src/utils.py: files in ``iterdir`` order, urls decoded from bytes, the two modalities asserted equal."""
    class_to_idx = {name: i for i, name in enumerate(sorted(CLASSES))}

    def read_features(path):
        hf = h5py.File(path, "r")
        data = hf["data"]
        url = [str(u, "utf-8") for u in list(hf["video_urls"])]
        return data, url

    def get_data_by_modality(modality):
        result = {"data": [], "target": [], "url": []}
        for split_name in LOADER_SPLITS[dataset_type]:
            modality_path = (root / f"{modality}/{split_name}").resolve()
            for file in modality_path.iterdir():
                data, url = read_features(file)
                for i, d in enumerate(data):
                    result["data"].append(d)
                    result["target"].append(class_to_idx[file.stem])
                    result["url"].append(url[i])
        with warnings.catch_warnings():  # torch warns that a list of arrays is slow; the reference does it
            warnings.simplefilter("ignore", UserWarning)
            result["data"] = torch.FloatTensor(result["data"])
        result["target"] = torch.LongTensor(result["target"])
        result["url"] = np.array(result["url"])
        return result

    result_audio = get_data_by_modality("audio")
    result_video = get_data_by_modality("video")
    assert torch.equal(result_audio["target"], result_video["target"])
    assert np.array_equal(result_audio["url"], result_video["url"])
    return {"audio": result_audio, "video": result_video}


def tcaf_read_dataset(root: Path, dataset_type: str) -> dict:
    """TCaF-GZSL ``VGGSoundDataset.read_dataset`` with its pickle ``read_features`` (src/utils.py)."""
    class_to_idx = {name: i for i, name in enumerate(sorted(CLASSES))}

    def read_features(path):
        with open(path, "rb") as f:
            x = pickle.load(f)
        data = x["features"]
        fps = x["fps"]
        url = [str(u) for u in list(x["video_names"])]
        return data, url, fps

    def get_data_by_modality(modality):
        result = {"data": [], "target": [], "url": [], "fps": []}
        for split_name in LOADER_SPLITS[dataset_type]:
            modality_path = (root / f"{modality}/{split_name}").resolve()
            for file in modality_path.iterdir():
                data, url, fps = read_features(file)
                for i, d in enumerate(data):
                    result["data"].append(d)
                    result["target"].append(class_to_idx[file.stem])
                    result["url"].append(url[i])
                    result["fps"].append(fps[i])
        result["target"] = torch.LongTensor(result["target"])
        result["url"] = np.array(result["url"])
        return result

    result_audio = get_data_by_modality("audio")
    result_video = get_data_by_modality("video")
    assert torch.equal(result_audio["target"], result_video["target"])
    assert np.array_equal(result_audio["url"], result_video["url"])
    return {"audio": result_audio, "video": result_video}


# ------------------------------------------------------------------ stores with different failures per modality
def rows_for(video_id: str, modality: str, n: int, dim: int):
    rng = np.random.default_rng(zlib.crc32(f"{modality}/{video_id}".encode()))
    start = np.arange(n) * 0.64
    return rng.standard_normal((n, dim)).astype(np.float32), start, start + 0.64


def make_store(path: Path, modality: str, dim: int, ids: list[str], failed: list[str], random: bool = False):
    spec = {"name": "vggish" if modality == "audio" else "c3d", "modality": modality, "output_dim": dim,
            "output_dtype": "float32", "mode": "benchmark", "weights_id": "random:seed=0" if random else "sha256:x"}  # fmt: skip
    store = FeatureStore.create(path, spec, f"fp-{modality}", random_weights=random)
    writer = store.writer("all")
    for k, video_id in enumerate(ids):
        feats, start, end = rows_for(video_id, modality, 1 + k % 3, dim)
        writer.add(video_id, feats, start, end, "ok", None, f"/v/{video_id}.mp4", 10, 1.0)
    for video_id in failed:
        writer.add(video_id, None, None, None, "no_audio", "no audio stream", f"/v/{video_id}.mp4", 10, 1.0)
    writer.commit()
    return store


@pytest.fixture
def manifest() -> pd.DataFrame:
    splits = ["s1_train", "s1_val_seen", "s1_val_unseen", "s2_test_seen", "s2_test_unseen"]
    rows = []
    for k in range(20):
        label = CLASSES[k % 4]
        rows.append({"video_id": f"v{k:02d}", "path": None, "label": label, "split": splits[k % 5]})
    return pd.DataFrame(rows)


@pytest.fixture
def stores(tmp_path: Path, manifest: pd.DataFrame) -> tuple[FeatureStore, FeatureStore]:
    ids = list(manifest["video_id"])
    audio = make_store(
        tmp_path / "audio", "audio", 8, [v for v in ids if v not in ("v03", "v07")], ["v03", "v07"]
    )
    visual = make_store(tmp_path / "visual", "visual", 12, [v for v in ids if v != "v11"], [])
    return audio, visual


# ------------------------------------------------------------------ tests
def test_avca_reader_loads_the_h5_export_of_stores_that_failed_on_different_videos(
    stores, manifest, tmp_path
):
    audio, visual = stores
    report = export_stores([audio, visual], manifest, tmp_path / "out", layouts=("h5",))
    assert report.dropped == ["v03", "v07", "v11"] and report.videos == 17
    assert report.missing == {"vggish (audio)": ["v03", "v07"], "c3d (video)": ["v11"]}
    root = tmp_path / "out" / "averaged"
    for dataset_type in LOADER_SPLITS:
        loaded = avca_read_dataset(root, dataset_type)
        urls = loaded["audio"]["url"].tolist()
        assert urls and not {"v03", "v07", "v11"} & set(urls)
        expected_audio = audio.pooled(urls)[1]
        np.testing.assert_array_equal(loaded["audio"]["data"].numpy(), expected_audio)
        np.testing.assert_array_equal(loaded["video"]["data"].numpy(), visual.pooled(urls)[1])
        labels = manifest.set_index("video_id").loc[urls, "label"]
        assert loaded["video"]["target"].tolist() == [sorted(CLASSES).index(c) for c in labels]


def test_the_faithful_reader_rejects_trees_that_list_different_videos(stores, manifest, tmp_path):
    export_stores(list(stores), manifest, tmp_path / "out", layouts=("h5",))
    root = tmp_path / "out" / "averaged"
    cat = root / "audio" / "stage_1_train" / "Cat.h5"
    with h5py.File(cat, "r") as handle:
        data, urls = np.asarray(handle["data"]), list(handle["video_urls"][()])
    with h5py.File(cat, "w") as handle:  # what a per-modality export gave when a video failed in audio only
        handle.create_dataset("data", data=data[1:])
        handle.create_dataset("video_urls", data=np.array(urls[1:], dtype=object), dtype=h5py.string_dtype())
    with pytest.raises(AssertionError):
        avca_read_dataset(root, "train")


def test_tcaf_reader_loads_the_pkl_export(stores, manifest, tmp_path):
    audio, visual = stores
    export_stores([visual, audio], manifest, tmp_path / "out", layouts=("pkl",))
    for dataset_type in LOADER_SPLITS:
        loaded = tcaf_read_dataset(tmp_path / "out" / "non_averaged", dataset_type)
        urls = [u[2:-1] for u in loaded["video"]["url"].tolist()]  # TCaF keeps str(bytes): "b'v00'"
        for row, video_id in zip(loaded["video"]["data"], urls, strict=True):
            np.testing.assert_array_equal(row, visual.features(video_id))
        assert loaded["video"]["fps"] == [25] * len(urls) and not {"v03", "v07", "v11"} & set(urls)


def test_grouped_layouts_need_one_audio_and_one_visual_store(stores, manifest, tmp_path):
    audio, visual = stores
    with pytest.raises(StoreError, match="one audio and one visual store; got vggish \\(audio\\)"):
        export_stores([audio], manifest, tmp_path / "out", layouts=("h5",))
    with pytest.raises(StoreError, match="one audio and one visual"):
        export_stores([visual, visual], manifest, tmp_path / "out", layouts=("pkl",))
    report = export_stores([audio], manifest, tmp_path / "out", layouts=("npy",))  # npy: per store
    assert report.videos == 18 and (tmp_path / "out/npy/vggish/v00_vggish.npy").is_file()


@pytest.mark.parametrize(
    ("layout", "src"), [("h5", "averaged/audio"), ("pkl", "non_averaged/video"), ("npy", "npy/vggish")]
)
def test_random_weights_stay_labelled_through_export_and_import(tmp_path, manifest, layout, src):
    ids = list(manifest["video_id"])
    audio = make_store(tmp_path / "a", "audio", 8, ids, [], random=True)
    visual = make_store(tmp_path / "v", "visual", 12, ids, [], random=True)
    stores = [audio, visual] if layout != "npy" else [audio]
    export_stores(stores, manifest, tmp_path / "out", layouts=(layout,))
    folder = tmp_path / "out" / src
    record = json.loads(
        (folder / EXPORT_INFO if layout == "npy" else folder.parent / EXPORT_INFO).read_text()
    )
    assert {s["random_weights"] for s in record["stores"]} == {True}
    imported = import_layout(tmp_path / "out" / src, tmp_path / "imported", layout)
    assert imported.random_weights and imported.header["spec"]["random_weights"] is True
    assert imported.header["spec"]["name"] == ("c3d" if src.endswith("video") else "vggish")
    assert imported.header["spec"]["modality"] == ("visual" if src.endswith("video") else "audio")
    assert verify_store(imported) == []


def test_published_files_without_a_record_import_as_pretrained(stores, manifest, tmp_path):
    export_stores(list(stores), manifest, tmp_path / "out", layouts=("h5",))
    (tmp_path / "out" / "averaged" / EXPORT_INFO).unlink()
    imported = import_layout(tmp_path / "out/averaged/video", tmp_path / "imported", "h5")
    assert not imported.random_weights and imported.header["spec"]["name"] == "imported-h5"


def write_video_features_output(folder: Path, key: str, framewise: bool) -> dict[str, np.ndarray]:
    """What video_features writes per video: ``<stem>_<key>.npy``, and for frame-wise models also
    ``<stem>_fps.npy`` and ``<stem>_timestamps_ms.npy`` (its vggish writes the features only)."""
    folder.mkdir(parents=True)
    arrays = {}
    for k, stem in enumerate(["v_GGSY1Qvo990", "v_ZNVhz7ctTq0"]):
        features = np.random.default_rng(k).standard_normal((3 + k, 128)).astype(np.float32)
        np.save(folder / f"{stem}_{key}.npy", features)
        if framewise:
            np.save(folder / f"{stem}_fps.npy", np.array(5.0))
            np.save(folder / f"{stem}_timestamps_ms.npy", np.arange(3 + k) * 200.0)
        arrays[stem] = features
    return arrays


@pytest.mark.parametrize(
    ("key", "framewise", "modality"),
    [("vggish", False, "audio"), ("vggish", True, "audio"), ("clip", True, "visual")],
)
def test_video_features_output_imports_without_a_key_into_its_modality(tmp_path, key, framewise, modality):
    arrays = write_video_features_output(tmp_path / "vf", key, framewise)
    store = import_layout(tmp_path / "vf", tmp_path / "imported", "npy")
    assert store.header["spec"]["name"] == key and store.header["spec"]["modality"] == modality
    assert not store.random_weights
    for stem, features in arrays.items():
        np.testing.assert_array_equal(store.features(stem), features)
    start, _ = store.timestamps("v_ZNVhz7ctTq0")
    if framewise:
        np.testing.assert_allclose(start, [0.0, 0.2, 0.4, 0.6])
    else:
        assert np.isnan(start).all()
    np.save(tmp_path / "vf" / "v_GGSY1Qvo990_resnet.npy", np.zeros((1, 4)))
    with pytest.raises(
        StoreError, match=re.escape(f"cannot infer the feature key from {sorted([key, 'resnet'])}")
    ):
        import_layout(tmp_path / "vf", tmp_path / "other", "npy")


def test_cli_exports_audio_and_video_together(stores, manifest, tmp_path, capsys):
    from workflows.cli import main as cli_main

    audio, visual = stores
    VideoManifest(manifest).to_parquet(tmp_path / "manifest.parquet")
    (tmp_path / "extract_out").mkdir()
    for store in (audio, visual):  # an `avzsl extract` output folder lists its stores in stores.json
        store.path.rename(tmp_path / "extract_out" / store.path.name)
    (tmp_path / "extract_out" / "stores.json").write_text(json.dumps({"vggish": "audio", "c3d": "visual"}))
    common = ["--manifest", str(tmp_path / "manifest.parquet"), "--out", str(tmp_path / "out")]
    assert cli_main(["store", "export", str(tmp_path / "extract_out"), *common, "--layout", "h5"]) == 0
    out = capsys.readouterr().out
    assert "for 17 videos" in out and "left out 3 manifest videos" in out
    assert "2 without vggish (audio) features, e.g. v03, v07" in out
    avca_read_dataset(tmp_path / "out" / "averaged", "test")
    one = str(tmp_path / "extract_out" / "audio")
    assert cli_main(["store", "export", one, *common, "--layout", "pkl"]) == 2
    assert "one audio and one visual store" in capsys.readouterr().err
    assert cli_main(["store", "export", one, *common, "--layout", "npy"]) == 0


def test_export_files_match_the_published_format(stores, manifest, tmp_path):
    audio, visual = stores
    export_stores([audio, visual], manifest, tmp_path / "out")
    with h5py.File(tmp_path / "out/averaged/video/stage_1_train/Cat.h5", "r") as handle:
        assert handle["data"].dtype == np.float32 and handle["data"].shape == (1, 12)
        assert list(handle["video_urls"][()]) == [b"v00"]  # variable-length UTF-8, read back as bytes
    # stage_2_train is every stage-1 video, as in the published layout
    with h5py.File(tmp_path / "out/averaged/audio/stage_2_train/Dog.h5", "r") as handle:
        assert sorted(handle["video_urls"][()]) == [b"v01", b"v05", b"v17"]
    with open(tmp_path / "out/non_averaged/audio/stage_1_val_seen/Dog.pkl", "rb") as handle:
        payload = pickle.load(handle)
    assert payload["video_names"] == [b"v01"] and payload["fps"] == [25]
    np.testing.assert_array_equal(payload["features"][0], audio.features("v01"))
    assert (tmp_path / "out/npy/vggish/v05_vggish.npy").is_file()  # one folder per extractor
    np.testing.assert_allclose(np.load(tmp_path / "out/npy/c3d/v05_timestamps_ms.npy"), [0.0, 640.0, 1280.0])


@pytest.mark.parametrize(("layout", "folder"), [("h5", "averaged"), ("pkl", "non_averaged"), ("npy", "npy")])
def test_export_import_round_trip_is_lossless(stores, manifest, tmp_path, layout, folder):
    audio, visual = stores
    export_stores([audio, visual], manifest, tmp_path / "out", layouts=(layout,))
    for store, modality, key in ((audio, "audio", "vggish"), (visual, "video", "c3d")):
        src = tmp_path / "out" / folder / (key if layout == "npy" else modality)
        imported = import_layout(src, tmp_path / f"imported-{modality}", layout)
        ids = imported.video_ids()
        assert ids == sorted(set(manifest["video_id"]) - {"v03", "v07", "v11"})
        np.testing.assert_array_equal(imported.pooled(ids)[1], store.pooled(ids)[1])
        if layout != "h5":  # h5 holds only the averaged vector; pkl and npy keep every row
            for vid in ids:
                np.testing.assert_array_equal(imported.features(vid), store.features(vid))
        if layout == "npy":
            for vid in ids:
                np.testing.assert_array_equal(
                    np.stack(imported.timestamps(vid)), np.stack(store.timestamps(vid))
                )
        else:
            labels = VideoManifest.read_parquet(imported.path / "manifest.parquet").table.set_index(
                "video_id"
            )
            expected = manifest.set_index("video_id")
            assert labels.loc[ids, "label"].tolist() == expected.loc[ids, "label"].tolist()
            assert labels.loc[ids, "split"].tolist() == expected.loc[ids, "split"].tolist()
        assert verify_store(imported) == []
