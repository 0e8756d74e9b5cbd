"""Probe a media file: its streams, true frame count and timing, and one typed status; never raises.

Status policy (users scan whole datasets with this, so one word must say what a file is good for):
the status is the most serious finding, in this order: ``not_found``, ``empty_file``, ``undecodable``,
``partial`` (truncated: fewer frames than the header promises, or a damaged packet), ``no_video`` /
``no_audio`` (one modality is missing: the file is still usable for the other one, which
``has_video`` / ``has_audio`` say), ``ok``. An audio-visual dataset needs both streams, so a file without
audio is reported as ``no_audio`` rather than hidden behind ``ok``.

The default probe reads packets and decodes one frame, so damage in the middle of a stream goes unseen;
``deep=True`` decodes every packet of both streams and reports each corrupt region (``partial``).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av

from pipeline.decode.sampling import SAMPLING_EPS_S
from pipeline.decode.scan import VideoScan, scan_video
from pipeline.decode.types import AudioStreamInfo, Outcome, ProbeResult, VideoStreamInfo


def probe(
    path: str | Path, *, backend: str | None = None, timeout_s: float = 30.0, deep: bool = False
) -> ProbeResult:
    """Describe ``path``: streams, codecs, duration, PTS-derived frame rate and count, audio rate/channels.

    Stream facts always come from PyAV's packet scan. With ``backend`` other than ``pyav`` the file's first
    frame is also decoded with that backend in a guarded child process (``timeout_s``), so a scan with
    ``backend="decord"`` finds the files decord cannot read (or hangs on) before a long job does.
    ``deep`` decodes every packet (as long as a full decode takes) and reports the corrupt regions.
    """
    result = _probe(Path(path))
    if deep and result.status in (Outcome.OK, Outcome.NO_AUDIO, Outcome.NO_VIDEO, Outcome.PARTIAL):
        result = _check_every_packet(result)
    if backend in (None, "pyav") or result.status not in (Outcome.OK, Outcome.NO_AUDIO):
        return result
    return _check_backend(result, backend, timeout_s)


def _check_every_packet(result: ProbeResult) -> ProbeResult:
    regions = corrupt_regions(Path(result.path))
    if not regions:
        return result
    error = "; ".join(filter(None, [result.error if result.status is Outcome.PARTIAL else None, *regions]))
    return replace(result, status=Outcome.PARTIAL, error=f"corrupt: {error}", corrupt_regions=tuple(regions))


def corrupt_regions(path: Path) -> list[str]:
    """Decode every packet of the first video and audio streams; each run of damaged packets, as text.

    A packet is damaged when the demuxer flags it, the decoder rejects it, or a frame it yields is marked
    corrupt (FFmpeg's error concealment); a demux error ends the file there.
    """
    runs: dict[str, list[list[float]]] = {}  # stream kind -> [start_s, end_s, packets] per run
    last_bad: dict[str, int] = {}
    seen: dict[str, int] = {}
    tail = None
    with av.open(str(path)) as container:
        streams = [*container.streams.video[:1], *container.streams.audio[:1]]
        try:
            for packet in container.demux(streams):
                if packet.size == 0 or packet.pts is None:
                    continue
                kind = packet.stream.type
                index = seen[kind] = seen.get(kind, -1) + 1
                if not _damaged(packet):
                    continue
                start = float(packet.pts * packet.time_base)
                end = start + float((packet.duration or 0) * packet.time_base)
                if last_bad.get(kind) == index - 1:  # decode order: B-frames' times go back and forth
                    run = runs[kind][-1]
                    run[:] = [min(run[0], start), max(run[1], end), run[2] + 1]
                else:
                    runs.setdefault(kind, []).append([start, end, 1])
                last_bad[kind] = index
        except (av.FFmpegError, OSError) as err:
            tail = f"demux stopped: {err}"
    regions = [
        f"{kind} {start:.3f}-{end:.3f} s ({int(n)} packet{'s' if n > 1 else ''})"
        for kind, spans in sorted(runs.items())
        for start, end, n in spans
    ]
    return regions + ([tail] if tail else [])


def _damaged(packet: av.Packet) -> bool:
    try:
        return packet.is_corrupt or any(frame.is_corrupt for frame in packet.decode())
    except av.FFmpegError:
        return True


def _check_backend(result: ProbeResult, backend: str, timeout_s: float) -> ProbeResult:
    from pipeline.decode.guarded import open_guarded  # starts processes: only imported when asked for

    first = result.video.start_s if result.video is not None else 0.0
    with open_guarded(
        result.path, backend=backend, chunk_frames=1, timeout_s=timeout_s, end_s=first + SAMPLING_EPS_S * 2
    ) as decode:
        got = sum(len(chunk) for chunk in decode.frames())
    if got and decode.report.outcome is Outcome.OK:
        return result
    error = f"{backend}: {decode.report.error or 'decoded no frame'}"
    status = decode.report.outcome if decode.report.outcome is not Outcome.OK else Outcome.UNDECODABLE
    return replace(result, status=status, error=error)


def _probe(path: Path) -> ProbeResult:
    name = str(path)
    if not path.is_file():
        what = "is a directory, not a media file" if path.is_dir() else "does not exist"
        return ProbeResult(name, Outcome.NOT_FOUND, error=f"{what}; check the path")
    size = path.stat().st_size
    if size == 0:
        return ProbeResult(
            name, Outcome.EMPTY_FILE, error="file is empty (0 bytes); re-copy or re-download it", size_bytes=0
        )
    try:
        return _probe_media(path, size)
    except (av.FFmpegError, OSError, ValueError) as err:
        return ProbeResult(name, Outcome.UNDECODABLE, error=f"cannot read as media: {err}", size_bytes=size)


def _probe_media(path: Path, size: int) -> ProbeResult:
    name = str(path)
    with av.open(name) as container:
        fmt = container.format.name
        duration = container.duration / av.time_base if container.duration else None
        vstream = container.streams.video[0] if container.streams.video else None
        astream = container.streams.audio[0] if container.streams.audio else None
        audio = _audio_info(astream) if astream is not None else None
        video = None
        scan = None
        if vstream is not None:
            scan = scan_video(container, vstream)
            video = _video_info(vstream, scan)
    base = {"size_bytes": size, "container": fmt, "duration_s": duration, "video": video, "audio": audio}
    if vstream is None and astream is None:
        return ProbeResult(name, Outcome.UNDECODABLE, error="no audio or video stream", **base)
    first_error = _first_frame_error(path, "video" if vstream is not None else "audio")
    if first_error is not None:
        return ProbeResult(name, Outcome.UNDECODABLE, error=first_error, **base)
    if scan is not None and scan.truncation is not None:
        return ProbeResult(name, Outcome.PARTIAL, error=f"truncated: {scan.truncation}", **base)
    if vstream is None:
        return ProbeResult(name, Outcome.NO_VIDEO, error="no video stream (audio only)", **base)
    if astream is None:
        return ProbeResult(name, Outcome.NO_AUDIO, error="no audio stream (video only)", **base)
    return ProbeResult(name, Outcome.OK, **base)


def _video_info(stream: av.VideoStream, scan: VideoScan) -> VideoStreamInfo:
    ctx = stream.codec_context
    duration = scan.duration_s
    container_fps = float(stream.average_rate) if stream.average_rate else None
    return VideoStreamInfo(
        codec=ctx.name,
        width=int(ctx.width),
        height=int(ctx.height),
        frame_count=int(scan.pts.size),
        duration_s=duration,
        fps=scan.pts.size / duration if duration > 0 else 0.0,
        container_fps=container_fps,
        time_base=str(Fraction(stream.time_base)) if stream.time_base else "",
        start_s=scan.start_s,
    )


def _audio_info(stream: av.AudioStream) -> AudioStreamInfo:
    ctx = stream.codec_context
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    return AudioStreamInfo(
        codec=ctx.name, sample_rate=int(ctx.sample_rate), channels=int(ctx.channels), duration_s=duration
    )


def _first_frame_error(path: Path, kind: str) -> str | None:
    """Decode the first frame of the first ``kind`` stream; the error text if none can be decoded."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
            for _frame in container.decode(stream):
                return None
    except (av.FFmpegError, OSError, ValueError) as err:
        return f"no {kind} frame could be decoded: {err}"
    return f"no {kind} frame could be decoded (the stream is empty)"
