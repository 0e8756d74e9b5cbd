"""Data sources: the published h5/pkl layouts (built in tmp from the REAL UCF split files with random
features), class-embedding indexing, our feature stores, and the protocol's pair sampling."""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from model.data.alignment import WindowMismatch
from model.data.embeddings import (
    class_embedding_matrix,
    glove_vectors,
    load_vector_dict,
    minilm_vectors,
    published_mismatches,
    read_name_map,
    save_vector_dict,
)
from model.data.published import load_published, read_class_split
from model.data.sampling import PairSampler
from model.data.stores import InMemoryStore, load_from_stores
from model.data.synthetic import make_synthetic

FOLDERS = (
    "stage_1_train",
    "stage_1_val_seen",
    "stage_1_val_unseen",
    "stage_2_test_seen",
    "stage_2_test_unseen",
)
A_DIM, V_DIM = 6, 10


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_ucf_layout(avgzsl_root: Path, out: Path, temporal: bool, drop_video: str | None = None) -> Path:
    """Write ``<out>/{audio,video}/<split>/<Class>.{h5,pkl}`` for every video of the real UCF split csvs.

    Audio names are S80 bytes and video names vlen str (both occur in the wild). ``drop_video`` is left out
    of the video files only, to check that it is recorded, not silently lost. Features encode the video's
    row so the join on names can be checked.
    """
    rng = np.random.default_rng(0)
    split_dir = avgzsl_root / "UCF" / "class-split" / "main_split"  # csvs list all 9 test-unseen classes
    for folder in FOLDERS:
        with open(split_dir / f"{folder}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        by_class: dict[str, list[str]] = {}
        for r in rows:
            by_class.setdefault(r["label"], []).append(r["filename"])
        for label, names in by_class.items():
            for mod, dim in (("audio", A_DIM), ("video", V_DIM)):
                d = out / mod / folder
                d.mkdir(parents=True, exist_ok=True)
                keep = [n for n in names if not (mod == "video" and n == drop_video)]
                if temporal:
                    feats = [rng.normal(size=(int(rng.integers(1, 5)), dim)).astype(np.float32) for _ in keep]
                    obj = {
                        "features": feats,
                        "video_names": [n.encode() for n in keep],
                        "fps": [25] * len(keep),
                    }
                    with open(d / f"{label}.pkl", "wb") as f:
                        pickle.dump(obj, f)
                else:
                    data = rng.normal(size=(len(keep), dim)).astype(np.float32)
                    data[:, 0] = [hash(n) % 1000 for n in keep]  # name-dependent marker for the join check
                    with h5py.File(d / f"{label}.h5", "w") as h:
                        h["data"] = data
                        if mod == "audio":
                            h["video_urls"] = np.array([n.encode() for n in keep], dtype="S80")
                        else:
                            h.create_dataset("video_urls", data=keep, dtype=h5py.special_dtype(vlen=str))
    return out


@pytest.fixture(scope="module")
def ucf_h5(avgzsl_root: Path, tmp_path_factory) -> Path:
    return write_ucf_layout(
        avgzsl_root, tmp_path_factory.mktemp("ucf_h5"), temporal=False, drop_video="v_Archery_g01_c01"
    )


@pytest.mark.parametrize(("setting", "unseen_test", "unseen_videos"), [("main", 9, 1267), ("cls", 6, 845)])
def test_published_h5_loader_split_semantics(avgzsl_root, ucf_h5, setting, unseen_test, unseen_videos):
    data = load_published(avgzsl_root, "UCF", setting, features_dir=ucf_h5)
    s = data.splits
    assert (len(s["train"].seen), len(s["train"].unseen)) == (30, 0)
    assert (len(s["val"].seen), len(s["val"].unseen)) == (30, 12)
    assert (len(s["train_val"].seen), len(s["train_val"].unseen)) == (42, 0)
    assert (len(s["test"].seen), len(s["test"].unseen)) == (42, unseen_test)
    # docs/benchmark.md counts; one train video lacks visual features and is dropped *with a record*
    assert len(s["train"]) == 3174 - 1
    assert len(s["val"]) == 353 + 1467
    assert len(s["train_val"]) == 4994 - 1
    assert len(s["test"]) == 555 + unseen_videos
    assert data.dropped == [
        {
            "video_id": "v_Archery_g01_c01",
            "split": "stage_1_train",
            "reason": "audio features without video features",
        }
    ]
    assert data.audio_dim == A_DIM and data.visual_dim == V_DIM
    assert data.class_embeddings.shape == (101, 300)
    # audio and video rows are joined on the name: the marker column agrees for every video
    for k in (0, 100, 3000):
        vid = s["train"].video_ids[k]
        assert s["train"].audio[k, 0] == s["train"].visual[k, 0] == hash(vid) % 1000
    # class ids come from the case-sensitively sorted all_class.txt, matched case-insensitively
    k = s["train"].video_ids.index("v_HandStandPushups_g01_c01")
    assert data.class_names[int(s["train"].labels[k])] == "HandstandPushups"


def test_published_pkl_temporal_loader(avgzsl_root, tmp_path):
    root = write_ucf_layout(avgzsl_root, tmp_path / "pkl", temporal=True)
    data = load_published(avgzsl_root, "UCF", "cls", temporal=True, features_dir=root)
    test = data.splits["test"]
    assert data.temporal and len(test) == 555 + 845
    assert test.audio.shape[0] == len(test) and test.audio.shape[2] == A_DIM
    assert test.audio_mask is not None and test.audio_mask.shape == test.audio.shape[:2]
    lengths = test.audio_mask.sum(1)
    assert int(lengths.min()) >= 1 and int(lengths.max()) <= 4
    assert torch.all(test.audio[~test.audio_mask] == 0)  # padding is zeros, flagged invalid


def write_tcaf_tree(avgzsl_root: Path, root: Path) -> Path:
    """A UCF tree as TCaF's splitting scripts leave it: ``cls_features_no_averaged`` (not the
    ``_non_averaged`` its configs read), class-name embeddings in the features folder's ``text/``."""
    shutil.copytree(avgzsl_root / "UCF" / "class-split", root / "UCF" / "class-split")
    feats = write_ucf_layout(
        avgzsl_root, root / "UCF" / "features" / "cls_features_no_averaged", temporal=True
    )
    (feats / "text").mkdir()
    shutil.copy(avgzsl_root / "w2v_features" / "word_embeddings_ucf_normed.npy", feats / "text")
    return root


def test_published_tcaf_tree_as_its_scripts_write_it(avgzsl_root, tmp_path):
    root = write_tcaf_tree(avgzsl_root, tmp_path / "avgzsl_benchmark_non_averaged_datasets")
    data = load_published(root, "UCF", "cls", temporal=True)
    assert data.temporal and len(data.splits["train"]) == 3174
    vectors = load_vector_dict(avgzsl_root / "w2v_features" / "word_embeddings_ucf_normed.npy")
    names = read_name_map(avgzsl_root / "UCF" / "class-split" / "ucf_w2v_class_names.csv")
    k = data.class_names.index("ApplyEyeMakeup")
    assert torch.equal(data.class_embeddings[k], torch.from_numpy(vectors[names["ApplyEyeMakeup"]]))


def test_published_loader_names_missing_folders(avgzsl_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="stage_1_train"):
        load_published(avgzsl_root, "UCF", "main", features_dir=tmp_path)


def test_published_indexing_reproduces_documented_mismatch(avgzsl_root):
    vectors = load_vector_dict(avgzsl_root / "w2v_features" / "word_embeddings_ucf_normed.npy")
    name_map = read_name_map(avgzsl_root / "UCF" / "class-split" / "ucf_w2v_class_names.csv")
    class_names, lists = read_class_split(avgzsl_root / "UCF" / "class-split", "main")
    wrong = set(published_mismatches(class_names, vectors, name_map))
    # docs/reference-defects.md: UCF 79/101 overall, s1_train 23/30, s1_val_unseen 8/12, s2_test_seen 31/42, unseen 5/9
    assert len(wrong) == 79
    counts = {k: sum(class_names[c] in wrong for c in lists[k]) for k in lists}
    assert counts["stage_2_test_seen"] == 31 and len(lists["stage_2_test_seen"]) == 42
    assert counts["stage_1_train"] == 23 and counts["stage_1_val_unseen"] == 8
    assert counts["stage_2_test_unseen"] == 5
    corrected = class_embedding_matrix(class_names, vectors, name_map, "corrected")
    with pytest.warns(UserWarning, match="79 of 101"):
        published = class_embedding_matrix(class_names, vectors, name_map, "published")
    ids = {c: i for i, c in enumerate(class_names)}
    assert name_map["CleanAndJerk"] == "Weight Lifting"
    assert torch.equal(corrected[ids["CleanAndJerk"]], torch.from_numpy(vectors["Weight Lifting"]))
    # a documented example: test-unseen PlayingFlute gets "Playing Guitar"
    assert torch.equal(published[ids["PlayingFlute"]], torch.from_numpy(vectors["Playing Guitar"]))
    assert not torch.equal(published[ids["PlayingFlute"]], corrected[ids["PlayingFlute"]])


def test_w2v_npz_conversion_round_trip(avgzsl_root, tmp_path):
    npz = tmp_path / "ucf.npz"
    vectors = load_vector_dict(avgzsl_root / "w2v_features" / "word_embeddings_ucf_normed.npy", cache_npz=npz)
    again = load_vector_dict(npz)
    assert sorted(again) == sorted(vectors) and len(again) == 101
    assert all(np.array_equal(again[k], vectors[k]) for k in vectors)
    assert abs(float(np.linalg.norm(again["Apply Eye Makeup"])) - 1.0) < 1e-5


def test_text_encoders_offline():
    names = ["Playing Guitar", "Playing Violin", "Horse Riding"]
    mini = minilm_vectors(names)
    glove = glove_vectors(names + ["ApplyEyeMakeup"])
    assert mini["Playing Guitar"].shape == (384,) and glove["Horse Riding"].shape == (50,)
    for vecs in (mini, glove):
        assert abs(float(np.linalg.norm(vecs["Horse Riding"])) - 1) < 1e-5
        # related names are closer than unrelated ones
        assert vecs["Playing Guitar"] @ vecs["Playing Violin"] > vecs["Playing Guitar"] @ vecs["Horse Riding"]
    with pytest.raises(ValueError, match="GloVe vocabulary"):
        glove_vectors(["Qzxv Wkqj"])


def _embedding_npz(syn, tmp_path: Path) -> Path:
    path = tmp_path / "classes.npz"
    save_vector_dict({n: syn.class_embeddings[i].numpy() for i, n in enumerate(syn.class_names)}, path)
    return path


def _manifest_and_stores(temporal: bool):
    syn = make_synthetic(
        n_seen=4,
        n_val_unseen=2,
        n_test_unseen=2,
        videos_per_class=10,
        audio_dim=5,
        visual_dim=7,
        temporal_steps=3 if temporal else 0,
        seed=1,
    )
    rows, feats_a, feats_v = [], {}, {}
    split_of = {"train": "s1_train", "val": None, "test": None}
    for name in ("train", "val", "test"):
        sp = syn.splits[name]
        for k, vid in enumerate(sp.video_ids):
            label = int(sp.labels[k])
            if name == "train":
                split = split_of[name]
            elif name == "val":
                split = "s1_val_seen" if label in sp.seen else "s1_val_unseen"
            else:
                split = "s2_test_seen" if label in sp.seen else "s2_test_unseen"
            rows.append(
                {"video_id": vid, "path": f"{vid}.mp4", "label": syn.class_names[label], "split": split}
            )
            a, v = sp.audio[k], sp.visual[k]
            if temporal:
                a, v = a[sp.audio_mask[k]], v[sp.visual_mask[k]]
            feats_a[vid], feats_v[vid] = a.numpy(), v.numpy()
    return pd.DataFrame(rows), feats_a, feats_v, syn


def _spread_over(features: dict[str, np.ndarray], seconds: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Timestamps that cut each video's ``seconds`` into as many equal windows as it has rows."""
    out = {}
    for vid, rows in features.items():
        edges = np.linspace(0.0, seconds, len(rows) + 1)
        out[vid] = (edges[:-1], edges[1:])
    return out


def test_temporal_stores_whose_windows_do_not_line_up_are_refused(tmp_path):
    manifest, fa, fv, syn = _manifest_and_stores(True)
    shifted = manifest.video_id[5]
    visual_times = _spread_over(fv, seconds=6.0)
    visual_times[shifted] = tuple(t + 30.0 for t in visual_times[shifted])  # e.g. a trimmed copy
    args = (InMemoryStore(fa, timestamps=_spread_over(fa, seconds=6.0)),)
    kwargs = {"temporal": True, "embeddings": "w2v", "embedding_path": _embedding_npz(syn, tmp_path)}
    with pytest.raises(
        WindowMismatch, match=rf"1 of \d+ videos .* {shifted}: audio 0.00-6.00 s, visual 30.00-36.00 s"
    ):
        load_from_stores(*args, InMemoryStore(fv, timestamps=visual_times), manifest, **kwargs)
    # within one window (here the longest window is 6 s / 1 row) the offset is tolerated
    visual_times[shifted] = tuple(t + 0.5 for t in _spread_over(fv, seconds=6.0)[shifted])
    load_from_stores(*args, InMemoryStore(fv, timestamps=visual_times), manifest, **kwargs)
    # averaged features are not paired step by step: no check
    load_from_stores(
        *args, InMemoryStore(fv, timestamps={shifted: (np.array([99.0]), np.array([100.0]))}), manifest,
        temporal=False, embeddings="w2v", embedding_path=kwargs["embedding_path"],
    )  # fmt: skip


@pytest.mark.parametrize("temporal", [False, True])
def test_store_source_joins_on_video_id_and_records_failures(temporal, tmp_path):
    manifest, fa, fv, syn = _manifest_and_stores(temporal)
    bad = manifest.video_id[0]
    del fv[bad]
    audio = InMemoryStore(fa, timestamps=_spread_over(fa, seconds=6.0))
    visual = InMemoryStore(
        fv, failed={bad: "no_video: stream missing"}, timestamps=_spread_over(fv, seconds=6.0)
    )
    data = load_from_stores(
        audio,
        visual,
        manifest,
        temporal=temporal,
        embeddings="w2v",
        embedding_path=_embedding_npz(syn, tmp_path),
    )
    label = manifest.label[0]
    assert data.dropped == [
        {
            "video_id": bad,
            "split": "stage_1_train",
            "label": label,
            "reason": "visual failed: no_video: stream missing",
        }
    ]
    assert data.notes == [] and data.lost_classes == []  # the class keeps its other videos
    assert len(data.splits["train"]) == len(syn.splits["train"]) - 1
    assert len(data.splits["test"]) == len(syn.splits["test"])
    assert data.splits["test"].unseen and len(data.splits["val"].unseen) == 2
    sp, ref = data.splits["test"], syn.splits["test"]
    k = sp.video_ids.index(ref.video_ids[3])
    if temporal:
        assert torch.equal(sp.visual[k][sp.visual_mask[k]], ref.visual[3][ref.visual_mask[3]])
    else:
        assert torch.allclose(sp.visual[k], ref.visual[3])
    assert torch.equal(data.class_embeddings, syn.class_embeddings)


def test_store_source_with_real_feature_store(tmp_path):
    from pipeline.store import FeatureStore

    manifest, fa, fv, syn = _manifest_and_stores(False)
    stores = []
    for name, feats in (("audio", fa), ("visual", fv)):
        store = FeatureStore.create(
            tmp_path / name,
            {"name": name},
            "fp-" + name,
            dim=next(iter(feats.values())).shape[-1],
            dtype="float32",
        )
        w = store.writer("t0")
        for vid, x in feats.items():
            x = np.asarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
            t = np.arange(len(x), dtype=np.float64)
            w.add(vid, x, t, t + 1, "ok", None, vid, 1, 0.0)
        w.commit()
        stores.append(FeatureStore.open(tmp_path / name))
    data = load_from_stores(
        stores[0], stores[1], manifest, embeddings="w2v", embedding_path=_embedding_npz(syn, tmp_path)
    )
    assert len(data.splits["train_val"]) == sum(
        manifest.split.isin(["s1_train", "s1_val_seen", "s1_val_unseen"])
    )
    assert not data.dropped


def test_store_source_rejects_unknown_split_names(tmp_path):
    manifest, fa, fv, syn = _manifest_and_stores(False)
    manifest.loc[0, "split"] = "training"
    with pytest.raises(ValueError, match="split values"):
        load_from_stores(
            InMemoryStore(fa),
            InMemoryStore(fv),
            manifest,
            embedding_path=_embedding_npz(syn, tmp_path),
            embeddings="w2v",
        )


def test_pair_sampler_balanced_and_negatives_from_other_classes():
    labels = torch.tensor([0] * 100 + [1] * 10 + [2] * 40 + [5] * 2)
    sampler = PairSampler(labels)
    pairs = sampler.epoch(200, 64, torch.Generator().manual_seed(0))
    pos, neg = pairs.positive.flatten(), pairs.negative.flatten()
    assert pairs.positive.shape == (200, 64)
    assert torch.all(labels[pos] != labels[neg])
    counts = torch.bincount(labels[pos], minlength=6)[[0, 1, 2, 5]].float()
    assert counts.max() / counts.min() < 1.1  # class-balanced, not proportional to class size (50:1)
    neg_counts = torch.bincount(labels[neg], minlength=6)[[0, 1, 2, 5]].float()
    assert neg_counts.max() / neg_counts.min() < 1.1
    # every video of a small class gets drawn; within-class choice is uniform
    assert set(pos[labels[pos] == 5].tolist()) == {150, 151}
    again = sampler.epoch(200, 64, torch.Generator().manual_seed(0))
    assert torch.equal(again.positive, pairs.positive)


def test_pair_sampler_needs_two_classes():
    with pytest.raises(ValueError, match="two training classes"):
        PairSampler(torch.zeros(5, dtype=torch.long))


def test_classes_that_lose_every_video_are_named_with_their_split_and_how_metrics_count_them(tmp_path):
    manifest, fa, fv, syn = _manifest_and_stores(False)
    test_unseen = manifest[manifest.split == "s2_test_unseen"]
    lost = test_unseen.label.iloc[0]
    lost_ids = test_unseen.video_id[test_unseen.label == lost].tolist()
    for vid in lost_ids:
        del fa[vid]
    audio = InMemoryStore(fa, failed={vid: "no_audio: the file has no audio stream" for vid in lost_ids})
    data = load_from_stores(
        audio, InMemoryStore(fv), manifest, embeddings="w2v", embedding_path=_embedding_npz(syn, tmp_path)
    )
    assert data.lost_classes == [
        {
            "split": "stage_2_test_unseen",
            "class": lost,
            "dropped": len(lost_ids),
            "reasons": ["audio failed: no_audio: the file has no audio stream"],
        }
    ]
    unseen = len(set(test_unseen.label))
    (note,) = data.notes
    assert note.startswith(
        f"stage_2_test_unseen: 1 class(es) have no usable video ({lost}; e.g. audio failed"
    )
    assert f"test U and ZSL average only the {unseen - 1} unseen classes with videos" in note
    test = data.splits["test"]
    assert data.class_names.index(lost) in test.unseen, "the class stays a candidate"
    assert data.class_names.index(lost) not in test.labels.tolist()


def test_random_weights_stores_label_the_data(tmp_path):
    from pipeline.store import FeatureStore

    manifest, fa, fv, syn = _manifest_and_stores(False)
    store = FeatureStore.create(
        tmp_path / "visual", {"name": "vit"}, "fp", dim=7, dtype="float32", random_weights=True
    )
    writer = store.writer("t0")
    for vid, x in fv.items():
        t = np.arange(len(x.reshape(-1, 7)), dtype=np.float64)
        writer.add(vid, x.reshape(-1, 7), t, t + 1, "ok", None, vid, 1, 0.0)
    writer.commit()
    data = load_from_stores(
        InMemoryStore(fa),
        FeatureStore.open(tmp_path / "visual"),
        manifest,
        embeddings="w2v",
        embedding_path=_embedding_npz(syn, tmp_path),
    )
    (note,) = data.notes
    assert note.startswith("visual features from RANDOMLY INITIALISED extractors")
    both = load_from_stores(
        InMemoryStore(fa, random_weights=True),
        InMemoryStore(fv, random_weights=True),
        manifest,
        embeddings="w2v",
        embedding_path=_embedding_npz(syn, tmp_path),
    )
    assert both.notes[0].startswith("audio and visual features from RANDOMLY INITIALISED extractors")
    pretrained = load_from_stores(
        InMemoryStore(fa),
        InMemoryStore(fv),
        manifest,
        embeddings="w2v",
        embedding_path=_embedding_npz(syn, tmp_path),
    )
    assert pretrained.notes == []


def test_notes_reach_metrics_the_printed_table_and_the_report(tmp_path):
    """The random-weights label and the lost classes survive train, evaluate and report."""
    from model.api import evaluate_run, format_table, train_and_evaluate
    from model.config import TrainConfig
    from workflows.report import load_run, write_report

    manifest, fa, fv, syn = _manifest_and_stores(False)
    test_unseen = manifest[manifest.split == "s2_test_unseen"]
    lost = test_unseen.label.iloc[0]
    for vid in test_unseen.video_id[test_unseen.label == lost]:
        del fv[vid]
    data = load_from_stores(
        InMemoryStore(fa, random_weights=True),
        InMemoryStore(fv),
        manifest,
        embeddings="w2v",
        embedding_path=_embedding_npz(syn, tmp_path),
    )
    small = {
        "token_dim": 8,
        "encoder_hidden": 16,
        "projector_hidden": 8,
        "dim_out": 8,
        "dim_head": 4,
        "mlp_dim": 8,
    }
    cfg = TrainConfig(model="avca", avca=small, epochs=1, batches_per_epoch=2, batch_size=8, device="cpu")
    metrics = train_and_evaluate(cfg, data, tmp_path / "run")
    stored = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert stored["notes"] == metrics["notes"] == data.notes and len(data.notes) == 2
    assert stored["lost_classes"][0]["class"] == lost
    table = format_table(evaluate_run(tmp_path / "run"))
    assert "note: audio features from RANDOMLY INITIALISED extractors" in table
    assert f"note: stage_2_test_unseen: 1 class(es) have no usable video ({lost}" in table
    assert evaluate_run(tmp_path / "run", data)["notes"] == data.notes  # a re-test on other data says so too
    report = write_report([load_run(tmp_path / "run")], tmp_path / "report")["markdown"].read_text()
    assert "RANDOMLY INITIALISED" in report and f"({lost}" in report
