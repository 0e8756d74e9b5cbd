"""What ``avzsl run`` checks before any stage runs, and all that ``--dry-run`` can check without working:
every name and path a workflow gives exists (extractors, their options and weights, videos, the class table,
published features), so a typo fails in a second with the key to fix, not half an hour into a run.
"""

from __future__ import annotations

from pathlib import Path

from model.config import DataConfig
from pipeline.config import ConfigError
from workflows.build import needs_class_roles
from workflows.config import ExtractorChoice, ExtractStep, VideoSource, WorkflowConfig

ALL_STAGES = ("data", "probe", "extract", "embed", "train", "report")
CHECKPOINT_SUFFIXES = (".pickle", ".pth", ".pt", ".npz", ".ckpt", ".bin", ".safetensors")


def check_workflow(cfg: WorkflowConfig) -> None:
    """Raise one :class:`ConfigError` listing every problem :func:`workflow_problems` finds."""
    problems = workflow_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(f"workflow {cfg.name}: {problems[0]}")
    if problems:
        raise ConfigError("\n  ".join([f"workflow {cfg.name}: {len(problems)} problems", *problems]))


def workflow_problems(cfg: WorkflowConfig) -> list[str]:
    """One line per problem, each naming the key (as written in the workflow file) and the fix."""
    wanted = set(cfg.stages or ALL_STAGES)
    problems = []
    workdir = Path(cfg.workdir)
    if workdir.exists() and not workdir.is_dir():
        problems.append(f"workdir: {workdir} is a file, not a folder; give a folder path")
    if cfg.kind == "videos":
        if "data" in wanted:
            problems += _video_problems(cfg.videos, needs_class_roles(cfg))
        if "extract" in wanted:
            problems += _extractor_problems(cfg.extract)
    elif "train" in wanted:
        problems += _published_problems(cfg.published)
    return problems


def _video_problems(videos: VideoSource, needs_roles: bool) -> list[str]:
    if videos.source == "synth":
        return []
    problems = []
    path = Path(str(videos.path))
    if videos.source == "folder" and not path.is_dir():
        problems.append(f"videos.path: {path} is not a folder; give the folder with one sub-folder per class")
    elif videos.source in ("csv", "manifest") and not path.is_file():
        problems.append(f"videos.path: {path} is not a file; give the {videos.source} file of the videos")
    if videos.classes and not Path(videos.classes).is_file():
        problems.append(f"videos.classes: {videos.classes} is not a file; give the CSV with name, role")
    elif needs_roles and not videos.classes and videos.source == "folder":
        problems.append(
            "videos.classes is not set: a class folder has no splits, so give a CSV with name, "
            "role (seen | val_unseen | test_unseen), description (--set videos.classes=CSV)"
        )
    return problems


def _extractor_problems(step: ExtractStep) -> list[str]:
    from extractors.registry import builder_options, list_specs, names

    known = names()
    specs = {spec.name: spec for spec in list_specs(step.mode)}
    choices = [("extract.visual", step.visual), ("extract.audio", step.audio)]
    choices += [(f"extract.extra[{i}]", choice) for i, choice in enumerate(step.extra)]
    problems = []
    for key, choice in choices:
        if choice.name not in known:
            problems.append(f"{key}.name: unknown extractor {choice.name!r}; available: {', '.join(known)}")
            continue
        allowed = builder_options(choice.name)
        unknown = sorted(set(choice.options) - allowed) if allowed is not None else []
        if unknown:
            problems.append(
                f"{key}.options: {choice.name} has no option(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(sorted(allowed or ()))}"
            )
        problem = _weights_problem(choice, specs[choice.name].weights_files)
        if problem:
            problems.append(f"{key}.weights: {problem}")
    return problems


def _weights_problem(choice: ExtractorChoice, expected_files: tuple[str, ...]) -> str | None:
    """None when the weights can be found: ``random``, an existing path, or a model in the local HF cache."""
    if choice.weights == "random" or Path(choice.weights).expanduser().exists():
        return None
    if expected_files and all(f.endswith(CHECKPOINT_SUFFIXES) for f in expected_files):
        return (
            f"{choice.weights} does not exist; give the local path of {' or '.join(expected_files)} "
            f"(nothing is downloaded), or `random` for an explicitly random network"
        )
    from extractors.weights import WeightsError, resolve_hf_dir

    try:
        resolve_hf_dir(choice.weights, what=choice.name)
    except WeightsError as err:
        return str(err)
    return None


def _published_problems(data: DataConfig) -> list[str]:
    if data.source == "synthetic":
        return []
    if data.source == "published":
        if not data.root:
            return ["published.root is not set: pass --set published.root=PATH/avgzsl_benchmark_datasets"]
        paths = {
            "root": data.root,
            "features_dir": data.features_dir,
            "class_split_root": data.class_split_root,
        }
    else:
        paths = {k: getattr(data, k) for k in ("audio_store", "visual_store", "manifest")}
    paths |= {"embedding_path": data.embedding_path, "name_map_csv": data.name_map_csv}
    return [
        f"published.{key}: {value} does not exist; check the path"
        for key, value in paths.items()
        if value and not Path(value).exists()
    ]
