"""Local weights only: find, load and strictly check checkpoints against a spec's key/shape table.

docs/extractors.md: no extractor weights are downloadable here, so every loader takes a user-supplied local path
(or a model already in the local Hugging Face cache) and a missing or mismatched file is an error that names
the file, where to put it and where users get it. ``weights="random"`` is the only other choice, explicit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch

from extractors.spec import RANDOM_PREFIX
from pipeline.errors import UserError

RANDOM = "random"


class WeightsError(UserError, ValueError):
    """A checkpoint that is missing, unreadable or does not match the expected architecture."""


def is_random(weights: str | Path) -> bool:
    return isinstance(weights, str) and weights == RANDOM


def random_weights_id(seed: int) -> str:
    return f"{RANDOM_PREFIX}:seed={seed}"


def file_digest(path: Path, prefix: int = 16) -> str:
    """sha256 prefix of a file: the weights' identity inside spec fingerprints."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:prefix]


def weights_id(paths: Iterable[Path]) -> str:
    return "sha256:" + ",".join(f"{p.name}={file_digest(p)}" for p in paths)


def resolve_file(weights: str | Path, names: Iterable[str], *, what: str, source: str) -> Path:
    """``weights`` is the checkpoint itself or a folder holding one of ``names``; else a helpful error."""
    names = tuple(names)
    path = Path(weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise WeightsError(
            f"{what}: none of {', '.join(names)} found in folder {path}. Put the checkpoint there (or pass its "
            f"path). Get it from {source}. Nothing is downloaded; use --weights random for an explicitly "
            f"random (unlabelled-as-real) model."
        )
    raise WeightsError(
        f"{what}: weights file {path} does not exist. Expected {' or '.join(names)}; get it from {source} "
        f"and pass its local path. Nothing is downloaded; use --weights random for an explicitly random model."
    )


def load_checkpoint(path: Path, *, what: str) -> dict[str, torch.Tensor]:
    """torch.load with ``weights_only=True``; unwraps ``{"state_dict": ...}`` and a DataParallel prefix."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unpickling/format error becomes a message naming the file
        raise WeightsError(
            f"{what}: cannot read {path} as a torch state_dict ({type(err).__name__}: {err})"
        ) from err
    if isinstance(data, Mapping) and "state_dict" in data and isinstance(data["state_dict"], Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{what}: {path} does not hold a state_dict of tensors")
    state = dict(data)
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def check_state_dict(
    state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]], *, what: str, path: Path
) -> None:
    """Strict parity: same keys, same shapes; the error lists every difference."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{key}: checkpoint {tuple(state[key].shape)} vs expected {tuple(expected[key])}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key])
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes {_short(wrong)}")
        raise WeightsError(f"{what}: {path} does not match the expected architecture: " + "; ".join(parts))


def load_strict(
    weights: str | Path,
    names: Iterable[str],
    expected: Mapping[str, tuple[int, ...]],
    *,
    what: str,
    source: str,
) -> tuple[dict[str, torch.Tensor], Path]:
    path = resolve_file(weights, names, what=what, source=source)
    state = load_checkpoint(path, what=what)
    check_state_dict(state, expected, what=what, path=path)
    return state, path


def uninitialised(module_class: Callable[..., torch.nn.Module], *args, **kwargs) -> torch.nn.Module:
    """Build a module without running its random init (the checkpoint overwrites every tensor anyway)."""
    with torch.device("meta"):
        module = module_class(*args, **kwargs)
    return module.to_empty(device="cpu")


def resolve_hf_dir(weights: str | Path, *, what: str) -> Path:
    """A local model folder (with config.json), or a model id already in the local Hugging Face cache."""
    path = Path(weights).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsError(f"{what}: {path} has no config.json; pass a Hugging Face model folder")
        return path
    if path.exists():
        raise WeightsError(f"{what}: {path} is a file; pass the Hugging Face model folder that holds it")
    from huggingface_hub import snapshot_download

    try:  # local_files_only: the cache is read, the hub is never contacted
        return Path(snapshot_download(str(weights), local_files_only=True))
    except Exception as err:  # not cached / not a valid id: one message with the fix
        raise WeightsError(
            f"{what}: {weights!s} is neither a local model folder nor a model in the local Hugging Face cache "
            f"({type(err).__name__}). Save the model with save_pretrained() to a folder (or copy a downloaded "
            f"snapshot) and pass that path; nothing is downloaded at run time."
        ) from err


def hf_weights_id(folder: Path) -> str:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".pt", ".pth") or p.name == "config.json"
    )
    return weights_id(files)


def check_hf_loading(
    info: Mapping[str, list], *, what: str, folder: Path, allow_missing: tuple[str, ...] = ()
):
    """transformers' loading info -> error on any missing key we use or any shape mismatch."""
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(allow_missing)]
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise WeightsError(
            f"{what}: {folder} does not match the model: missing {_short(sorted(missing))}, "
            f"mismatched {_short([str(m) for m in mismatched])}"
        )


def _short(items: list[str], limit: int = 6) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + "]" + more
