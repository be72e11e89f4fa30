"""``image-tags``: tag files and whole folders from the command line.

    image-tags tag photos/ --format jsonl > tags.jsonl
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

FORMATS = ("table", "csv", "jsonl")  # as in formats.py, kept here so --help needs no imports
PROGRESS_THRESHOLD = 5


def _score(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image-tags", description="Suggest descriptive tags for photos.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    tag = commands.add_parser("tag", help="tag image files and folders (recursively)")
    tag.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    tag.add_argument("--top-k", type=_positive, default=20, help="tags per image (default 20)")
    tag.add_argument("--min-score", type=_score, default=0.0, help="drop tags scoring below this (0..1)")
    tag.add_argument("--model", default=None, help="bundle folder, config.yaml or config URL (default: the built-in model)")
    tag.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    tag.add_argument("--no-broader", action="store_true", help="leave out broader tags such as 'dog', 'animal'")
    tag.add_argument("--order", choices=("specific", "score"), default=None,
                     help="rank by expected specificity (default) or by raw score")
    tag.add_argument("--batch-size", type=_positive, default=16, help="images per encoder call (default 16)")
    tag.add_argument("--threads", type=_positive, default=None, help="encoder threads (default: all cores)")
    tag.add_argument("--max-pixels", type=_positive, default=None, help="refuse images with more pixels than this")
    tag.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    app = commands.add_parser("app", help="run the Streamlit app (port from --port, else $PORT, else 8501)")
    app.add_argument("--port", type=_positive, default=None)
    app.add_argument("--address", default=None, help="address to bind (default 0.0.0.0 when $PORT is set, else localhost)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tag":
        return _tag(args)
    if args.command == "app":
        return _app(args)
    return 2  # unreachable: argparse requires a command


def _app(args) -> int:
    """Replace this process with ``streamlit run`` on the app (what Docker and Heroku start)."""
    import os
    from pathlib import Path

    port = args.port or int(os.environ.get("PORT", "8501"))
    address = args.address or ("0.0.0.0" if "PORT" in os.environ else "localhost")
    script = Path(__file__).resolve().parent / "main.py"
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    os.execv(sys.executable, command)
    return 0  # not reached


def _tag(args) -> int:
    from .bundle import DEFAULT_CONFIG, BundleError, load_bundle
    from .formats import writer
    from .images import DEFAULT_MAX_PIXELS
    from .predictors import ImagePredictor, LabelPredictor
    from .tagging import find_images, tag_files

    try:
        bundle = load_bundle(args.model or DEFAULT_CONFIG)
        image_predictor = ImagePredictor(bundle, num_threads=args.threads, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
        label_predictor = LabelPredictor(bundle)
    except BundleError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    files = find_images(args.paths)
    if not files:
        print("image-tags: no image files found under " + ", ".join(args.paths), file=sys.stderr)
        return 1

    progress = None
    if not args.quiet and len(files) > PROGRESS_THRESHOLD:
        from tqdm import tqdm

        progress = tqdm(total=len(files), unit="img", file=sys.stderr, desc="tagging")
    write = writer(args.format, sys.stdout)
    failures = 0
    try:
        for result in tag_files(
            files, image_predictor, label_predictor,
            top_k=args.top_k, min_score=args.min_score, include_broader=not args.no_broader,
            order=args.order, batch_size=args.batch_size,
            on_done=progress.update if progress else None,
        ):
            failures += not result.ok
            write(result)
            sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        return 0
    finally:
        if progress:
            progress.close()
    if failures:
        print(f"image-tags: {failures} of {len(files)} files could not be tagged", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
