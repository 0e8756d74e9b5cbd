"""Shared fixtures: the optional real data under ../shared/data, skipped with a reason where absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AVZSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the read-only shared data (sample videos, AV-GZSL split files)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set AVZSL_SHARED_DATA to use it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_videos(shared_data: Path) -> dict[str, Path]:
    """The two real sample videos with audio, keyed by stem."""
    folder = shared_data / "samples"
    videos = {p.stem: p for p in sorted(folder.glob("*.mp4"))}
    if len(videos) < 2:
        pytest.skip(f"sample videos not found in {folder}")
    return videos


@pytest.fixture(scope="session")
def avgzsl_root(shared_data: Path) -> Path:
    """Root holding the real AV-GZSL class-split files (UCF, ActivityNet, VGGSound) and w2v_features."""
    root = shared_data / "avgzsl"
    if not (root / "UCF" / "class-split").is_dir():
        pytest.skip(f"AV-GZSL split files not found under {root}")
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: intra-op threads only add contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
