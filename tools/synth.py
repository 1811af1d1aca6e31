"""Write synthetic traffic to files: an mp4 with truth JSON lines, or an accuracy-benchmark folder.

``write_video`` renders a scene (:class:`~alpr_topo.stages.synthetic.SceneRenderer`) into a video
with OpenCV's VideoWriter (``mp4v``; MJPG in an ``.avi`` where mp4 cannot be written) and one
JSON object per frame, ``{"camera_id", "frame_id", "objects": [...]}`` (the objects are
``env.meta["truth"]`` of ``source.synthetic``). ``write_images`` writes JPEGs in the OpenALPR
benchmark layout (``NAME.jpg`` + ``NAME.txt`` with ``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE``
per visible plate) so ``alpr-topo bench accuracy --dataset DIR`` runs on synthetic data.
``synth_command`` is the ``alpr-topo synth`` command.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import re
import time
from typing import Any, Callable

import click

__all__ = ["synthesize", "write_video", "write_images", "synth_command"]

log = logging.getLogger("alpr_topo.synth")

Progress = Callable[[int, "int | None"], None]


def _renderer(params: Any, overrides: dict[str, Any]):
    from ..stages.synthetic import SceneRenderer

    renderer = SceneRenderer(params, **overrides)
    if renderer.total_frames is None:
        raise ValueError("an endless scene (duration_s 0 and count 0) cannot be written to files: set one of them")
    return renderer


def _open_video(path: str, fps: float, size: tuple[int, int], say: Callable[[str], None]) -> tuple[Any, str, str]:
    import cv2

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if writer.isOpened():
        return writer, path, "mp4v"
    writer.release()
    fallback = os.path.splitext(path)[0] + ".avi"
    writer = cv2.VideoWriter(fallback, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV could open neither an mp4v writer for {path} nor an MJPG writer for {fallback} "
                           "(is OpenCV built with FFMPEG?)")
    say(f"OpenCV could not write mp4 (fourcc mp4v) to {path}; writing MJPG to {fallback} instead")
    return writer, fallback, "MJPG"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "synthetic"


def synthesize(
    params: Any = None,
    *,
    video: str | None = None,
    truth: str | None = None,
    images: str | None = None,
    every: int = 5,
    jpeg_quality: int = 95,
    progress: Progress | None = None,
    on_message: Callable[[str], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Render one scene once and write any of: a video, its truth JSONL, a benchmark folder.

    ``params``: :class:`~alpr_topo.stages.synthetic.SyntheticParams`, a dict, or None (the
    default scene); keyword arguments override single parameters. ``progress(done, total)`` is
    called after every frame. Returns a summary (paths, frames, size, counts, render speed).
    """
    import cv2

    say = on_message or log.warning
    renderer = _renderer(params, overrides)
    p = renderer.params
    total = renderer.total_frames
    every = max(1, int(every))
    warnings: list[str] = []

    def message(text: str) -> None:
        warnings.append(text)
        say(text)

    writer = None
    video_path = codec = None
    if video:
        writer, video_path, codec = _open_video(video, renderer.fps, (p.width, p.height), message)
    truth_fh = None
    if truth:
        os.makedirs(os.path.dirname(os.path.abspath(truth)), exist_ok=True)
        truth_fh = open(truth, "w")
    if images:
        os.makedirs(images, exist_ok=True)
    stem = f"{_safe(p.camera_id)}-s{p.seed}"
    vehicles: set[int] = set()
    plates: set[tuple[int, str]] = set()
    visible_frames = written_images = image_plates = 0
    started = time.perf_counter()
    frame_id = 0
    try:
        for frame_id, (image, objects) in enumerate(renderer.frames()):
            if writer is not None:
                writer.write(image)
            if truth_fh is not None:
                truth_fh.write(json.dumps({"camera_id": p.camera_id, "frame_id": frame_id, "objects": objects}) + "\n")
            visible = [o for o in objects if o["plate_visible"]]
            vehicles.update(o["vehicle_id"] for o in objects)
            plates.update((o["vehicle_id"], o["plate"]) for o in visible)
            visible_frames += bool(visible)
            if images and visible and frame_id % every == 0:
                name = f"{stem}-{frame_id:06d}"
                cv2.imwrite(os.path.join(images, name + ".jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
                with open(os.path.join(images, name + ".txt"), "w") as fh:
                    for o in visible:
                        x1, y1, x2, y2 = o["plate_box"]
                        fh.write(f"{name}.jpg\t{x1}\t{y1}\t{x2 - x1}\t{y2 - y1}\t{o['plate']}\n")
                written_images += 1
                image_plates += len(visible)
            if progress is not None:
                progress(frame_id + 1, total)
    finally:
        if writer is not None:
            writer.release()
        if truth_fh is not None:
            truth_fh.close()
    elapsed = time.perf_counter() - started
    frames = renderer.frame_index
    summary: dict[str, Any] = {
        "frames": frames,
        "fps": renderer.fps,
        "width": p.width,
        "height": p.height,
        "seed": p.seed,
        "camera_id": p.camera_id,
        "vehicles": len(vehicles),
        "plates": len(plates),
        "frames_with_visible_plate": visible_frames,
        "seconds": round(elapsed, 3),
        "render_fps": round(frames / elapsed, 1) if elapsed > 0 else None,
    }
    if video:
        summary.update(video=video_path, codec=codec)
    if truth:
        summary["truth"] = truth
    if images:
        summary.update(images_dir=images, images=written_images, image_plates=image_plates)
    if warnings:
        summary["warnings"] = warnings
    return summary


def write_video(out: str, truth: str | None, params: Any = None, *, progress: Progress | None = None,
                on_message: Callable[[str], None] | None = None, **overrides: Any) -> dict[str, Any]:
    """Write the scene to ``out`` (mp4, fourcc mp4v; MJPG ``.avi`` beside it if mp4 cannot be
    opened, said through ``on_message`` and in the summary's ``warnings``) and its truth to
    ``truth`` (JSON lines, one per frame, aligned with the video's frames)."""
    return synthesize(params, video=out, truth=truth, progress=progress, on_message=on_message, **overrides)


def write_images(out_dir: str, params: Any = None, *, every: int = 5, jpeg_quality: int = 95,
                 progress: Progress | None = None, **overrides: Any) -> dict[str, Any]:
    """Write every ``every``-th frame that shows a readable plate as ``NAME.jpg`` + ``NAME.txt``
    (OpenALPR benchmark layout: ``NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`` per visible plate)."""
    return synthesize(params, images=out_dir, every=every, jpeg_quality=jpeg_quality, progress=progress, **overrides)


# --- alpr-topo synth ------------------------------------------------------------------------------

def _range(text: str, name: str, kind: type = float) -> tuple[Any, Any]:
    parts = [v for v in re.split(r"[-,:]", text.strip()) if v]
    try:
        values = [kind(v) for v in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise click.BadParameter(f"expected MIN-MAX such as 90-220, got {text!r}", param_hint=name)
    return values[0], values[1]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WxH such as 1280x720, got {text!r}", param_hint="--size") from None
    return w, h


def _csv(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


@click.command("synth", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--out", "video", type=click.Path(dir_okay=False), help="video file to write (.mp4, fourcc mp4v; "
              "falls back to MJPG .avi where OpenCV cannot write mp4)")
@click.option("--truth", type=click.Path(dir_okay=False), help="truth JSON lines, one per frame "
              "(default with --out: VIDEO.truth.jsonl beside the video)")
@click.option("--images", type=click.Path(file_okay=False), help="also write an accuracy-benchmark folder "
              "(OpenALPR layout: NAME.jpg + NAME.txt per frame with a readable plate)")
@click.option("--every", type=click.IntRange(min=1), default=5, show_default=True,
              help="with --images: take every N-th frame (that shows a readable plate)")
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), help="scene length [default: 60]")
@click.option("--frames", type=click.IntRange(min=1), help="number of frames (overrides --seconds)")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), help="frame rate [default: 15]")
@click.option("--size", help="frame size WxH [default: 1280x720]")
@click.option("--seed", type=click.IntRange(min=0), help="random seed; the same seed and options give the same "
              "frames and truth [default: 0]")
@click.option("--formats", help="plate formats, comma separated: us, eu, all or ids "
              "(us-ca,us-ny,us-tx,us-il,us-nj,eu-de,eu-fr,eu-uk,eu-nl,eu-it,eu-es) [default: us,eu]")
@click.option("--vehicles", type=click.IntRange(min=0), help="vehicles over the scene [default: 20]")
@click.option("--max-simultaneous", type=click.IntRange(min=1, max=12), help="most vehicles in view at once [default: 3]")
@click.option("--directions", help="comma separated: ltr, rtl, towards, away [default: ltr,rtl,towards]")
@click.option("--plate-width", help="plate width range in pixels, MIN-MAX [default: 90-220]")
@click.option("--crossing", help="speed range: seconds to cross the frame, MIN-MAX [default: 2.5-5.5]")
@click.option("--noise", type=float, help="sensor noise sigma in grey levels [default: 3]")
@click.option("--shutter", type=float, help="exposure time in seconds: motion blur, 0 = sharp [default: 0.004]")
@click.option("--low-light", type=float, help="0 = day ... 1 = night [default: 0]")
@click.option("--occlusion", type=float, help="fraction of vehicles whose plate a pedestrian hides for a while "
              "[default: 0.2]")
@click.option("--font", "fonts", multiple=True, help="font file or name for the characters (repeatable; "
              "'default' = Pillow's built-in font) [default: DejaVu Sans Bold / Mono Bold / Condensed Bold, default]")
@click.option("--camera-id", help="camera id in the truth [default: synthetic]")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="any other parameter of source.synthetic, value in YAML (e.g. --set plate_rotation_deg=0)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
def synth_command(video: str | None, truth: str | None, images: str | None, every: int, seconds: float | None,
                  frames: int | None, fps: float | None, size: str | None, seed: int | None, formats: str | None,
                  vehicles: int | None, max_simultaneous: int | None, directions: str | None,
                  plate_width: str | None, crossing: str | None, noise: float | None, shutter: float | None,
                  low_light: float | None, occlusion: float | None, fonts: tuple[str, ...], camera_id: str | None,
                  settings: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Render synthetic traffic with ground truth: vehicles with licence plates of known text.

    Writes a video (--out) with one truth line per frame (--truth), and/or a folder of JPEGs with
    OpenALPR-style .txt labels (--images) for `alpr-topo bench accuracy --dataset DIR`.
    The default scene is 60 s of 1280x720 at 15 fps with about 20 vehicles, US and EU plates
    90-220 px wide, some motion blur and occlusions. The same options and seed always give
    the same frames. Parameters are those of the source.synthetic stage (docs/synthetic.md).

    \b
    Examples:
      alpr-topo synth --out traffic.mp4 --truth traffic.jsonl
      alpr-topo synth --images bench/synth --seconds 120 --formats us --every 3
      alpr-topo synth --out night.mp4 --low-light 0.8 --size 1920x1080 --seed 7
      alpr-topo synth --out small.mp4 --plate-width 40-80 --set plate_rotation_deg=8
    """
    import yaml
    from pydantic import ValidationError

    if not video and not images:
        raise click.UsageError("give --out VIDEO and/or --images DIR")
    values: dict[str, Any] = {}
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--set")
        values[key.strip()] = yaml.safe_load(raw)
    if seconds is not None:
        values["duration_s"] = seconds
    if frames is not None:
        values["count"] = frames
    if fps is not None:
        values["fps"] = fps
    if size:
        values["width"], values["height"] = _size(size)
    for key, value in (("seed", seed), ("vehicles", vehicles), ("max_simultaneous", max_simultaneous),
                       ("noise", noise), ("shutter_s", shutter), ("low_light", low_light),
                       ("occlusion", occlusion), ("camera_id", camera_id)):
        if value is not None:
            values[key] = value
    if formats:
        values["formats"] = _csv(formats)
    if directions:
        values["directions"] = _csv(directions)
    if plate_width:
        values["plate_width"] = _range(plate_width, "--plate-width", int)
    if crossing:
        values["crossing_s"] = _range(crossing, "--crossing", float)
    if fonts:
        values["fonts"] = list(fonts)
    if video and not truth:
        truth = os.path.splitext(video)[0] + ".truth.jsonl"

    last = [0.0]
    started = time.monotonic()
    tty = sys.stderr.isatty()

    def progress(done: int, total: int | None) -> None:
        now = time.monotonic()
        if quiet or (now - last[0] < (0.5 if tty else 5.0) and done != total):
            return
        last[0] = now
        rate = done / max(now - started, 1e-6)
        line = f"synth: frame {done}/{total} ({rate:.0f} frames/s)"
        click.echo(f"\r{line}" if tty else line, err=True, nl=not tty or done == total)

    def say(text: str) -> None:
        click.echo(f"synth: {text}", err=True)

    try:
        summary = synthesize(values, video=video, truth=truth, images=images, every=every, progress=progress,
                             on_message=say)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors())
        raise click.ClickException(f"bad synthetic scene parameters: {problems}") from None
    except (ValueError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    parts = [f"{summary['frames']} frames {summary['width']}x{summary['height']} at {summary['fps']:g} fps",
             f"{summary['vehicles']} vehicles, {summary['plates']} readable plates"]
    if "video" in summary:
        parts.append(f"video {summary['video']} ({summary['codec']})")
    if "truth" in summary:
        parts.append(f"truth {summary['truth']}")
    if "images_dir" in summary:
        parts.append(f"{summary['images']} images with {summary['image_plates']} plates in {summary['images_dir']}")
    click.echo("synth: " + "; ".join(parts) + f" ({summary['render_fps']} frames/s)")


if __name__ == "__main__":
    synth_command()
