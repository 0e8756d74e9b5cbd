"""What an extraction job is: :class:`ExtractConfig`, and the inputs it names (videos, weights, store folders).

One config object describes the whole job; the CLI (``avzsl extract``), a workflow's extract stage and the
Dask workers all receive it whole. :class:`ExtractOptions` holds the knobs that are not about *what* to
extract, so a workflow file can set any of them without repeating the list.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.cluster import SlurmOptions
from pipeline.config import ConfigError, ConfigModel
from pipeline.manifest import MEDIA_EXTENSIONS, ManifestError, VideoManifest, scan_folder

DecodeIsolation = Literal["process", "none"]  # see extractors.runner.OPENERS
DecodeDevice = Literal["cpu", "cuda"]  # see pipeline.decode.on_device


class ExtractOptions(ConfigModel):
    """How an extraction job runs (where, how many workers, batching, decode limits, resume policy)."""

    cluster: str = "local"
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    device: str = "cpu"
    mode: Literal["clean", "benchmark"] = "clean"
    shard_size: int = Field(16, ge=1)
    batch_size: int = Field(32, ge=1)
    decode_timeout_s: float = Field(600.0, gt=0)
    decode_isolation: DecodeIsolation = "process"  # none: no time limit, for trusted inputs
    decode_device: DecodeDevice = "cpu"  # cuda: frames decoded by the GPU (NVDEC; needs torchcodec)
    prefetch_videos: int | None = Field(None, ge=1)  # decode threads per worker; None: the runner's default
    retry_failed: bool = False
    strict: bool = False  # exit non-zero when any video failed (by default only unfinished videos do)
    task_retries: int = Field(1, ge=0)
    slurm: SlurmOptions = SlurmOptions()


class ExtractConfig(ExtractOptions):
    """Everything ``avzsl extract`` needs; written next to the stores as ``config.yaml``.

    ``builder`` and ``runner`` (``module:function``) replace the extractor registry's builder and the
    standard runner, for out-of-tree extractors and test doubles; by default neither is set.
    """

    videos: list[str]
    extractors: list[str]
    out: str
    weights: dict[str, str] = {}  # extractor name -> local path, or "random"; "*" applies to all
    options: dict[str, dict[str, Any]] = {}  # extractor name -> builder options (e.g. {"vit": {"fps": 0.5}})
    builder: str | None = None
    runner: str | None = None

    def weights_for(self, name: str) -> str:
        """The weights of one extractor; a missing entry is a usage error that says what to pass."""
        value = self.weights.get(name, self.weights.get("*"))
        if not value:
            raise ConfigError(
                f"no weights for extractor {name!r}: pass --weights {name}=/path/to/weights "
                f"(or --weights {name}=random for an explicitly random, non-pretrained network)"
            )
        return value


def load_manifest(sources: list[str]) -> VideoManifest:
    """A manifest parquet, a CSV, a folder (class sub-folders, or plain videos) or a list of video paths."""
    if not sources:
        raise ConfigError("--videos: give a manifest parquet, a CSV, a folder or video paths")
    if len(sources) == 1:
        path = Path(sources[0])
        if path.suffix == ".parquet":
            return VideoManifest.read_parquet(path)
        if path.suffix == ".csv":
            return VideoManifest.from_csv(path)
        if path.is_dir():
            try:
                return VideoManifest.from_folder(path)
            except ManifestError:  # no class folders: plain media files, ids relative to the folder
                files, skipped = scan_folder(path)
                if not files:
                    raise ManifestError(
                        f"{path}: no media files found ({', '.join(sorted(MEDIA_EXTENSIONS))})"
                    ) from None
                manifest = VideoManifest.from_paths(files, root=path)
                manifest.problems.extend(skipped)
                return manifest
    return VideoManifest.from_paths(sources)


def store_dir(out: str | Path, name: str, fingerprint: str) -> Path:
    """One store per extractor + config fingerprint."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "extractor"
    return Path(out) / f"{safe}-{fingerprint[:10]}"


def builder(cfg: ExtractConfig) -> Callable[..., Any]:
    """The function that builds an extractor: the registry's, or the configured plug-in."""
    if cfg.builder:
        return _import(cfg.builder)
    from extractors.registry import build_extractor

    return build_extractor


def runner(cfg: ExtractConfig) -> tuple[Callable[..., Any], type]:
    """The per-video runner and its job type: the standard runner, or the configured plug-in's."""
    if cfg.runner:
        module = cfg.runner.partition(":")[0]
        return _import(cfg.runner), _import(f"{module}:VideoJob")
    from extractors.runner import VideoJob, extract_videos

    return extract_videos, VideoJob


def _import(ref: str) -> Any:
    import importlib

    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise ConfigError(f"{ref!r}: expected module:function")
    return getattr(importlib.import_module(module), attr)
