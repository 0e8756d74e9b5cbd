"""What an extractor is, as data: the spec every extractor declares (docs/architecture.md).

Modelled on torchvision's ``Weights`` metadata: the spec carries everything that changes the output
(sampling, windowing, preprocessing, mode, options and the identity of the weights), so a feature store can
record it and ``fingerprint()`` can tell two runs apart without comparing arrays.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

Modality = Literal["visual", "audio"]
Mode = Literal["clean", "benchmark"]
MODES: tuple[str, ...] = ("clean", "benchmark")
RANDOM_PREFIX = "random"
UNRESOLVED = "unresolved"


@dataclass(frozen=True)
class ExtractorSpec:
    """Declared behaviour of one extractor; ``weights_id`` is filled in when weights are loaded."""

    name: str
    modality: Modality
    sample_rate: float  # frames per second (visual) or Hz (audio) the decoder must deliver
    window: float  # frames (visual) or seconds (audio) per output row
    hop: float  # same unit as window
    input_size: tuple[int, ...]  # one model input, e.g. (3, 16, 112, 112) or (96, 64)
    output_dim: int
    output_dtype: str  # dtype of the finalized rows: "float32" or "uint8"
    preprocessing: str  # one-line human summary of the exact preprocessing
    mode: Mode
    weights_files: tuple[str, ...]  # expected file names, or a Hugging Face model id
    weights_source: str  # where users obtain the weights (nothing is downloaded)
    state_dict_shapes: tuple[tuple[str, tuple[int, ...]], ...]  # expected keys -> shapes of the checkpoint
    provenance: str  # paper / repository / docs note
    options: tuple[tuple[str, str], ...] = ()  # resolved builder options that change the output
    # How the decoder must deliver the input (docs/benchmark-mode.md): visual extractors take each target's
    # frame by ``frame_rule`` (pipeline.decode.FRAME_RULES), audio ones get their waveform by ``audio_path``
    # (pipeline.decode.AUDIO_PATHS); benchmark mode picks the published pipeline's choices.
    frame_rule: str = "pts"
    audio_path: str = "swresample"
    weights_id: str = UNRESOLVED  # "sha256:<prefix>[,...]" of the files, or "random:seed=<n>"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def window_unit(self) -> str:
        return "frames" if self.modality == "visual" else "seconds"

    @property
    def random_weights(self) -> bool:
        """True when the network was randomly initialised; such features must never pass as real ones."""
        return self.weights_id.startswith(RANDOM_PREFIX)

    @property
    def expected_keys(self) -> dict[str, tuple[int, ...]]:
        return dict(self.state_dict_shapes)

    def with_weights(self, weights_id: str) -> ExtractorSpec:
        return replace(self, weights_id=weights_id)

    def fingerprint(self) -> str:
        """Stable 16-hex hash of everything that changes the features, weights identity included."""
        payload = {
            key: value
            for key, value in self.to_dict().items()
            if key not in ("preprocessing", "weights_source", "provenance", "notes", "state_dict_shapes")
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """JSON-ready form (state_dict table summarised as a tensor count) for stores and ``extractors list``."""
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        data["weights_files"] = list(self.weights_files)
        data["options"] = dict(self.options)
        data["state_dict_shapes"] = len(self.state_dict_shapes)
        data["notes"] = list(self.notes)
        data["window_unit"] = self.window_unit
        data["fps"] = self.sample_rate if self.modality == "visual" else None
        data["random_weights"] = self.random_weights
        return data

    def label(self) -> str:
        """Short printable identity; random weights are always called out."""
        tag = " [RANDOM WEIGHTS: not real features]" if self.random_weights else ""
        return f"{self.name}/{self.mode} ({self.fingerprint()}){tag}"


def shapes_table(state_dict_shapes: dict[str, tuple[int, ...]]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Freeze a key -> shape mapping into the hashable form the spec stores."""
    return tuple((key, tuple(int(s) for s in shape)) for key, shape in state_dict_shapes.items())
