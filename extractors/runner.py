"""Extract features for many videos with several extractors: one decode per video, batches across videos.

Pipeline (docs/architecture.md, docs/architecture.md):
- ``prefetch_videos`` decode threads each take the next job and run :func:`pipeline.decode.open_guarded`
  (a killable child process with a time limit; ``decode_isolation="none"`` decodes on the thread itself):
  audio once at the audio extractors' rate and path (benchmark-mode audio for GPU models at its native rate,
  resampled on the GPU), frames once at the visual extractors' common fps and
  frame rule (or at the native rate, resampled by PTS per extractor when rates or rules differ).
  With ``decode_device="cuda"`` the frames are decoded by the GPU instead (:mod:`pipeline.decode.on_device`).
  Frames are cut into windows as they stream in and preprocessed by the same thread on the model's device
  (``prepare``), so preprocessing overlaps inference instead of queueing behind it on the calling thread
  (measured in benchmarks/extract.py). Prepared inputs and each video's final status go through a queue
  bounded in bytes, so decoding runs ahead of inference but memory stays bounded.
- The calling thread only pools prepared inputs per extractor across videos and runs the model on full
  batches of ``batch_size``; the last, partial batches run as soon as every decode thread has said it has
  finished (no polling).
- Each video yields one :class:`ExtractedFeatures` per extractor as soon as all its rows are embedded.
  Failures are typed per video and per extractor (``no_audio`` leaves visual extractors untouched,
  ``too_short`` when not one window fits, ``partial`` keeps what was decoded); none stops the batch.

:func:`extract_one` is the plain reference for one video: the same decode and windows, nothing concurrent.
The concurrent runner is tested to give exactly its rows.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from extractors.audio_resample import resample_clip
from extractors.base import Extractor, Window
from extractors.windowing import PtsResampler
from pipeline.cores import usable_cores
from pipeline.decode import open_guarded, open_inprocess
from pipeline.decode.on_device import DECODE_DEVICES, check_device_decoding, open_on_device
from pipeline.decode.types import DecodeReport, FrameChunk, Outcome

log = logging.getLogger(__name__)

CHUNK_FRAMES = 32
OPENERS = {"process": open_guarded, "none": open_inprocess}  # decode isolation -> how a video is opened
MAX_GPU_PREFETCH = 8
QUEUE_BYTES = 512 * 2**20  # decoded-but-not-embedded windows held at most (one oversized item always passes)


@dataclass
class VideoJob:
    video_id: str
    path: str


@dataclass
class ExtractedFeatures:
    video_id: str
    extractor: str
    status: Outcome
    reason: str | None
    features: np.ndarray | None  # (T, D)
    start_s: np.ndarray | None
    end_s: np.ndarray | None


@dataclass
class _Prepared:
    job: int
    ext: int
    inputs: torch.Tensor  # prepared model inputs (B, ...) on the device
    start_s: list[float]
    end_s: list[float]


@dataclass
class _Done:
    job: int
    statuses: dict[int, tuple[Outcome, str | None]]  # extractor index -> outcome, reason


@dataclass
class _WorkerExit:
    """A decode thread has no more jobs; the consumer stops once every thread has sent one."""


class _Stop(Exception):
    """The consumer went away: decode threads drop their work and exit."""


class ByteQueue:
    """FIFO bounded by the bytes it holds; ``put`` blocks while full, ``get`` returns None on timeout."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: deque[tuple[object, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self.stopped = False

    def put(self, item: object, nbytes: int) -> None:
        with self._cond:
            while self._bytes and self._bytes + nbytes > self.max_bytes and not self.stopped:
                self._cond.wait(0.5)
            if self.stopped:
                raise _Stop
            self._items.append((item, nbytes))
            self._bytes += nbytes
            self._cond.notify_all()

    def get(self, timeout: float | None) -> object | None:
        with self._cond:
            if not self._items and timeout:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            if not self._items:
                return None
            item, nbytes = self._items.popleft()
            self._bytes -= nbytes
            self._cond.notify_all()
            return item

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


@dataclass
class _Plan:
    """What one decode must deliver for this set of extractors."""

    visual: list[int]
    audio: list[int]
    fps: float | None  # the common frame rate, or None (native rate + per-extractor resampling)
    frame_rule: str  # the common frame rule (when ``fps`` is set)
    audio_rate: int
    audio_path: str
    resample_on: torch.device | None = None  # the audio models' GPU, where benchmark-mode audio is resampled

    @classmethod
    def of(cls, extractors: Sequence[Extractor]) -> _Plan:
        visual = [i for i, e in enumerate(extractors) if e.spec.modality == "visual"]
        audio = [i for i, e in enumerate(extractors) if e.spec.modality == "audio"]
        rates = {int(extractors[i].spec.sample_rate) for i in audio}
        paths = {extractors[i].spec.audio_path for i in audio}
        if len(rates) > 1 or len(paths) > 1:
            raise ValueError(
                f"audio extractors need different sample rates {sorted(rates)} or audio paths "
                f"{sorted(paths)}; run them in separate passes"
            )
        sampling = {(float(extractors[i].spec.sample_rate), extractors[i].spec.frame_rule) for i in visual}
        fps, rule = sampling.pop() if len(sampling) == 1 else (None, "pts")
        path = paths.pop() if paths else "swresample"
        # benchmark-mode audio for models on one GPU is resampled there (extractors/audio_resample.py)
        devices = {extractors[i].device for i in audio}
        gpus = [d for d in devices if d.type == "cuda"]
        resample_on = gpus[0] if path == "int16-resampy" and len(devices) == 1 and gpus else None
        return cls(visual, audio, fps, rule, rates.pop() if rates else 16000, path, resample_on)


@dataclass(frozen=True)
class _DecodeSettings:
    timeout_s: float
    isolation: str
    decoder_threads: int
    device: str = "cpu"  # where frames are decoded


def extract_videos(
    jobs: Iterable[VideoJob],
    extractors: Sequence[Extractor],
    *,
    batch_size: int = 32,
    decode_timeout_s: float = 600.0,
    prefetch_videos: int | None = None,
    decode_isolation: str = "process",
    decode_device: str = "cpu",
) -> Iterator[ExtractedFeatures]:
    """Features of every job for every extractor, in completion order (see the module docstring).

    ``prefetch_videos`` (decode threads) defaults to :func:`default_prefetch`.
    ``decode_isolation``: ``process`` (a killable child with a time limit per video) or ``none`` (decode on
    the decode thread itself: no time limit, for trusted inputs; see :mod:`pipeline.decode.inprocess`).
    ``decode_device``: ``cpu`` (default) or ``cuda``: frames decoded by the GPU (NVDEC) for visual extractors
    on that GPU (:mod:`pipeline.decode.on_device`: needs torchcodec, and runs without isolation); audio is
    decoded on the CPU either way.
    """
    if not extractors:
        raise ValueError("extract_videos needs at least one extractor")
    if decode_isolation not in OPENERS:
        raise ValueError(f"unknown decode_isolation {decode_isolation!r}; choose one of {', '.join(OPENERS)}")
    _check_decode_device(decode_device, extractors)
    if prefetch_videos is None:
        prefetch_videos = default_prefetch(extractors)
    if batch_size < 1 or prefetch_videos < 1:
        raise ValueError(
            f"need batch_size >= 1 and prefetch_videos >= 1, got {batch_size}, {prefetch_videos}"
        )
    settings = _DecodeSettings(
        decode_timeout_s,
        decode_isolation,
        default_decoder_threads(extractors, prefetch_videos),
        decode_device,
    )
    plan = _Plan.of(extractors)
    queue = ByteQueue(QUEUE_BYTES)
    job_list: list[VideoJob] = []
    source = _JobSource(jobs, job_list)
    threads = [
        threading.Thread(
            target=_decode_worker,
            args=(source, extractors, plan, queue, settings),
            name=f"avzsl-decode-{i}",
            daemon=True,
        )
        for i in range(prefetch_videos)
    ]
    for thread in threads:
        thread.start()
    batcher = _Batcher(extractors, batch_size)
    try:
        yield from batcher.run(queue, len(threads), job_list)
        if source.error is not None:
            raise source.error
    finally:
        queue.stop()
        for thread in threads:
            thread.join(timeout=30)


def extract_one(
    job: VideoJob,
    extractors: Sequence[Extractor],
    *,
    batch_size: int = 32,
    decode_timeout_s: float = 600.0,
    decode_isolation: str = "process",
) -> list[ExtractedFeatures]:
    """The plain, sequential reference of :func:`extract_videos` for one video, one result per extractor.

    Nothing runs concurrently: decode the video once (the same decode plan and windows), then for each
    extractor in turn preprocess all its windows, run the model on them in batches of ``batch_size`` and
    finalize. ``extract_videos`` must give the same rows, outcomes and reasons
    (tests/test_extractors_runner.py); use it for that comparison and for debugging one video.
    """
    if decode_isolation not in OPENERS:
        raise ValueError(f"unknown decode_isolation {decode_isolation!r}; choose one of {', '.join(OPENERS)}")
    windows: dict[int, list[Window]] = {ext: [] for ext in range(len(extractors))}
    statuses = _decode_video(
        job.path,
        extractors,
        _Plan.of(extractors),
        lambda ext, cut: windows[ext].extend(cut),
        _DecodeSettings(decode_timeout_s, decode_isolation, decoder_threads=1),
    )
    return [
        _embed_video(job, extractor, windows[ext], statuses[ext], batch_size)
        for ext, extractor in enumerate(extractors)
    ]


def _embed_video(
    job: VideoJob,
    extractor: Extractor,
    windows: list[Window],
    status: tuple[Outcome, str | None],
    batch_size: int,
) -> ExtractedFeatures:
    outcome, reason = status
    name = extractor.spec.name
    if not windows or outcome not in (Outcome.OK, Outcome.PARTIAL):
        return ExtractedFeatures(job.video_id, name, outcome, reason, None, None, None)
    try:
        inputs = extractor.prepare(windows)
    except Exception as err:
        outcome, reason = _preprocessing_failed(job, extractor, err)
        return ExtractedFeatures(job.video_id, name, outcome, reason, None, None, None)
    batches = [extractor.run_model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    return ExtractedFeatures(
        job.video_id,
        name,
        outcome,
        reason,
        extractor.finalize(torch.cat(batches).cpu().numpy()),
        np.asarray([w.start_s for w in windows], dtype=np.float64),
        np.asarray([w.end_s for w in windows], dtype=np.float64),
    )


def _check_decode_device(device: str, extractors: Sequence[Extractor]) -> None:
    if device not in DECODE_DEVICES:
        raise ValueError(f"unknown decode_device {device!r}; choose one of {', '.join(DECODE_DEVICES)}")
    if device == "cpu":
        return
    elsewhere = [e.spec.name for e in extractors if e.spec.modality == "visual" and e.device.type != device]
    if elsewhere:
        raise ValueError(
            f"decode_device {device!r} decodes frames for models on that device, but {', '.join(elsewhere)} "
            f"runs elsewhere; use --device {device}, or decode on the cpu"
        )
    check_device_decoding(device)


def default_prefetch(extractors: Sequence[Extractor]) -> int:
    """Decode threads: 2 when the models run on the CPU (their own threads already use every core, so more
    decoding only competes with them); on a GPU the CPU is free for decoding and preprocessing, which then
    set the pace (benchmarks/extract.py on an H100 with 2 threads: the GPU idled over 90 % of the time), so
    one thread per core, up to ``MAX_GPU_PREFETCH``."""
    if not _on_gpu(extractors):
        return 2
    return max(2, min(MAX_GPU_PREFETCH, usable_cores()))


def default_decoder_threads(extractors: Sequence[Extractor], prefetch_videos: int) -> int:
    """Threads per decode: 1 when the models run on the CPU (the cores are taken, and a single-threaded
    decode gives the most frames per CPU second: benchmarks/decode.py, two streams at once); on a GPU the
    cores left over by the decode threads, so few long videos still use the machine."""
    if not _on_gpu(extractors):
        return 1
    return max(1, usable_cores() // prefetch_videos)


def _on_gpu(extractors: Sequence[Extractor]) -> bool:
    return any(extractor.device.type == "cuda" for extractor in extractors)


class _JobSource:
    """Hands out (index, job) pairs to decode threads; records jobs so the consumer can name them."""

    def __init__(self, jobs: Iterable[VideoJob], job_list: list[VideoJob]):
        self._iter = iter(jobs)
        self._lock = threading.Lock()
        self.jobs = job_list
        self.error: Exception | None = None  # raised by the job iterable; re-raised to the caller at the end

    def next(self) -> tuple[int, VideoJob] | None:
        with self._lock:
            if self.error is not None:
                return None
            try:
                job = next(self._iter, None)
            except Exception as err:  # e.g. an unreadable manifest: finish what started, then tell the caller
                self.error = err
                return None
            if job is None:
                return None
            self.jobs.append(job)
            return len(self.jobs) - 1, job


def _decode_worker(
    source: _JobSource,
    extractors,
    plan: _Plan,
    queue: ByteQueue,
    settings: _DecodeSettings,
) -> None:
    try:
        while (item := source.next()) is not None:
            index, job = item
            try:
                statuses = _decode_one(index, job, extractors, plan, queue, settings)
            except _Stop:
                raise
            except Exception as err:  # a bug met on one file must not stop the others; it is logged loudly
                log.exception("extracting %s (%s) failed", job.video_id, job.path)
                why = f"internal error while extracting: {type(err).__name__}: {err}"
                statuses = {i: (Outcome.UNDECODABLE, why) for i in range(len(extractors))}
            queue.put(_Done(index, statuses), 0)
    except _Stop:
        return
    finally:  # also when the job iterable raises, so the consumer never waits for a dead thread
        with contextlib.suppress(_Stop):
            queue.put(_WorkerExit(), 0)


def _decode_one(
    index: int,
    job: VideoJob,
    extractors,
    plan: _Plan,
    queue: ByteQueue,
    settings: _DecodeSettings,
):
    """Decode one video once, stream its prepared windows into ``queue``; return the status per extractor."""
    failed: dict[int, tuple[Outcome, str | None]] = {}  # extractor index -> preprocessing failure

    def prepare_and_queue(ext: int, windows: list[Window]) -> None:
        if ext in failed:
            return
        try:
            inputs = extractors[ext].prepare(windows)
        except Exception as err:  # e.g. a frame size the preprocessing cannot handle: this video only
            failed[ext] = _preprocessing_failed(job, extractors[ext], err)
            return
        item = _Prepared(index, ext, inputs, [w.start_s for w in windows], [w.end_s for w in windows])
        queue.put(item, inputs.numel() * inputs.element_size())

    statuses = _decode_video(job.path, extractors, plan, prepare_and_queue, settings)
    return statuses | failed


def _decode_video(
    path: str,
    extractors: Sequence[Extractor],
    plan: _Plan,
    send: Callable[[int, list[Window]], None],
    settings: _DecodeSettings,
) -> dict[int, tuple[Outcome, str | None]]:
    """Decode one video once and hand each extractor's windows to ``send(ext, windows)`` as they are cut:
    audio first, then frames as they stream in. Returns each extractor's typed outcome."""
    made = dict.fromkeys(range(len(extractors)), 0)  # windows cut per extractor

    def cut(ext: int, windows: list[Window]) -> None:
        if windows:
            made[ext] += len(windows)
            send(ext, windows)

    statuses: dict[int, tuple[Outcome, str | None]] = {}
    on_device = settings.device != "cpu" and bool(plan.visual)
    with contextlib.ExitStack() as stack:
        # frames decoded on the GPU leave the CPU decode (guarded child or in-process) the audio alone
        decode = (
            stack.enter_context(_open_video(path, plan, settings, on_device))
            if plan.audio or not on_device
            else None
        )
        video = (
            stack.enter_context(open_on_device(path, device=settings.device, **_sampling(plan)))
            if on_device
            else decode
        )
        if plan.audio:
            clip = decode.audio()
            if clip is not None and plan.resample_on is not None:
                clip = resample_clip(clip, plan.audio_rate, plan.resample_on)
            for ext in plan.audio:
                if clip is None:
                    statuses[ext] = (decode.audio_report.outcome, decode.audio_report.error)
                    continue
                cut(ext, list(extractors[ext].windows_from_audio(clip)))
                statuses[ext] = _final_status(
                    decode.audio_report, made[ext], extractors[ext], clip.duration_s
                )
        if plan.visual:
            for ext, windows in _frame_windows(video.frames(), plan, extractors):
                cut(ext, windows)
            for ext in plan.visual:
                statuses[ext] = _final_status(video.report, made[ext], extractors[ext], None)
    return statuses


def _open_video(path: str, plan: _Plan, settings: _DecodeSettings, frames_on_device: bool):
    """The CPU decode ``plan`` asks for, isolated as asked. Audio-only passes still go through the guarded
    child (time limit, crash isolation), which then never opens the video stream."""
    return OPENERS[settings.isolation](
        path,
        **_sampling(plan),
        want_audio=bool(plan.audio),
        want_frames=bool(plan.visual) and not frames_on_device,
        audio_rate=None if plan.resample_on else plan.audio_rate,
        audio_path=plan.audio_path,
        timeout_s=settings.timeout_s,
        decoder_threads=settings.decoder_threads,
        prefetch_chunks=2,
    )


def _sampling(plan: _Plan) -> dict:
    return {"fps": plan.fps, "chunk_frames": CHUNK_FRAMES, "frame_rule": plan.frame_rule}


def _frame_windows(
    chunks: Iterable[FrameChunk], plan: _Plan, extractors: Sequence[Extractor]
) -> Iterator[tuple[int, list[Window]]]:
    """(extractor index, windows) of every visual extractor as the frame chunks stream in; at the native
    rate (``plan.fps`` None) each extractor first resamples the frames to its own rate by PTS."""
    windowers = {ext: extractors[ext].frame_windower() for ext in plan.visual}
    resamplers = {
        ext: PtsResampler(extractors[ext].spec.sample_rate, extractors[ext].spec.frame_rule)
        for ext in plan.visual
        if plan.fps is None
    }
    for chunk in chunks:
        for ext, windower in windowers.items():
            piece = resamplers[ext].push(chunk) if ext in resamplers else chunk
            if piece is not None:
                yield ext, windower.push(piece)
    for ext, windower in windowers.items():
        if ext in resamplers and (piece := resamplers[ext].flush()) is not None:
            yield ext, windower.push(piece)
        yield ext, windower.flush()


def _preprocessing_failed(job: VideoJob, extractor: Extractor, err: Exception) -> tuple[Outcome, str]:
    log.warning("preprocessing failed for %s (%s): %s", job.video_id, extractor.spec.name, err)
    return Outcome.UNDECODABLE, f"preprocessing failed: {type(err).__name__}: {err}"


def _final_status(report: DecodeReport, rows: int, extractor: Extractor, audio_s: float | None):
    """Typed outcome of one (video, extractor) from the decode report and the number of windows made."""
    if report.outcome == Outcome.CRASHED:  # the decoder's death, not the video's: no partial rows, redone
        return report.outcome, report.error
    if rows and report.outcome == Outcome.OK:
        return Outcome.OK, None
    if rows:
        return Outcome.PARTIAL, f"{report.outcome}: {report.error}"
    if report.outcome not in (Outcome.OK, Outcome.PARTIAL):
        return report.outcome, report.error
    spec = extractor.spec
    have = f"{audio_s:.3f} s of audio" if spec.modality == "audio" else f"{report.frames_decoded} frames"
    return (
        Outcome.TOO_SHORT,
        f"{have} do not fill one {spec.window:g} {spec.window_unit} window of {spec.name}",
    )


@dataclass
class _VideoState:
    rows: dict[int, list[np.ndarray]] = field(default_factory=dict)
    starts: dict[int, list[float]] = field(default_factory=dict)
    ends: dict[int, list[float]] = field(default_factory=dict)
    pending: dict[int, int] = field(default_factory=dict)  # prepared rows not yet through the model
    done: _Done | None = None


class _Batcher:
    """The consumer: pools prepared inputs, runs full cross-video batches on the device, emits videos."""

    def __init__(self, extractors: Sequence[Extractor], batch_size: int):
        self.extractors = extractors
        self.batch_size = batch_size
        self.pending: dict[int, list[tuple[int, torch.Tensor]]] = {i: [] for i in range(len(extractors))}
        self.videos: dict[int, _VideoState] = {}

    def run(self, queue: ByteQueue, workers: int, jobs: list[VideoJob]):
        while workers:  # partial batches wait for more videos until every decode thread has exited
            item = queue.get(timeout=1.0)
            if item is None or isinstance(item, _WorkerExit):
                workers -= item is not None
                continue
            if isinstance(item, _Prepared):
                self._add(item)
                if sum(len(x) for _, x in self.pending[item.ext]) >= self.batch_size:
                    self._run(item.ext, full_only=True)
            else:
                assert isinstance(item, _Done)
                self.videos.setdefault(item.job, _VideoState()).done = item
            yield from self._emit_ready(jobs)
        for ext in self.pending:
            self._run(ext, full_only=False)
        yield from self._emit_ready(jobs)

    def _add(self, item: _Prepared) -> None:
        state = self.videos.setdefault(item.job, _VideoState())
        state.starts.setdefault(item.ext, []).extend(item.start_s)
        state.ends.setdefault(item.ext, []).extend(item.end_s)
        state.pending[item.ext] = state.pending.get(item.ext, 0) + len(item.inputs)
        self.pending[item.ext].append((item.job, item.inputs))

    def _run(self, ext: int, full_only: bool) -> None:
        """Run the model on pending inputs of ``ext`` in batches of batch_size (keeping a partial remainder).

        Only the inputs of a batch are concatenated, and an input that fills a batch alone goes in as it is:
        the remainder stays as it arrived instead of being copied again with every batch.
        """
        entries = self.pending[ext]
        left = sum(len(x) for _, x in entries)
        extractor = self.extractors[ext]
        while entries and (left >= self.batch_size or not full_only):
            batch = _take_rows(entries, min(self.batch_size, left))
            left -= sum(len(x) for _, x in batch)
            inputs = batch[0][1] if len(batch) == 1 else torch.cat([x for _, x in batch])
            out = extractor.run_model(inputs).cpu().numpy()
            at = 0
            for job, x in batch:
                state = self.videos[job]
                state.rows.setdefault(ext, []).append(out[at : at + len(x)])
                state.pending[ext] -= len(x)
                at += len(x)

    def _emit_ready(self, jobs: list[VideoJob]):
        for job in [j for j, s in self.videos.items() if s.done is not None and not any(s.pending.values())]:
            state = self.videos.pop(job)
            for ext, extractor in enumerate(self.extractors):
                yield self._result(jobs[job], ext, extractor, state)

    def _result(self, job: VideoJob, ext: int, extractor: Extractor, state: _VideoState) -> ExtractedFeatures:
        assert state.done is not None
        status, reason = state.done.statuses.get(
            ext, (Outcome.UNDECODABLE, "no status recorded for this extractor")
        )
        rows = state.rows.get(ext)
        if not rows or status not in (Outcome.OK, Outcome.PARTIAL):
            return ExtractedFeatures(job.video_id, extractor.spec.name, status, reason, None, None, None)
        features = extractor.finalize(np.concatenate(rows))
        return ExtractedFeatures(
            job.video_id,
            extractor.spec.name,
            status,
            reason,
            features,
            np.asarray(state.starts[ext], dtype=np.float64),
            np.asarray(state.ends[ext], dtype=np.float64),
        )


def _take_rows(entries: list[tuple[int, torch.Tensor]], rows: int) -> list[tuple[int, torch.Tensor]]:
    """Remove the first ``rows`` rows from ``entries`` (job, inputs) in order, splitting an entry if needed."""
    taken = []
    while rows:
        job, x = entries[0]
        if len(x) <= rows:
            taken.append(entries.pop(0))
        else:
            taken.append((job, x[:rows]))
            entries[0] = (job, x[rows:])
        rows -= len(taken[-1][1])
    return taken
