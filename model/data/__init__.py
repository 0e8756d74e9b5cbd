"""Data for training: loader splits, class embeddings, pair sampling, and the sources that fill them."""

from model.data.gzsl import LOADER_SPLITS, STAGE_FOLDERS, GZSLData, SplitData, StageData, assemble
from model.data.sampling import EpochPairs, PairSampler

__all__ = [
    "LOADER_SPLITS",
    "STAGE_FOLDERS",
    "EpochPairs",
    "GZSLData",
    "PairSampler",
    "SplitData",
    "StageData",
    "assemble",
]
