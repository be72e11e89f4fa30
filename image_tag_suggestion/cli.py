"""``image-tags``: tag files and whole folders from the command line.

    image-tags tag photos/ --format jsonl > tags.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

FORMATS = ("table", "csv", "jsonl")  # as in formats.py, kept here so --help needs no imports
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")  # as in training/train.py, for the same reason
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
    tag.set_defaults(run=_tag)
    tag.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    tag.add_argument("--top-k", type=_positive, default=20, help="tags per image (default 20)")
    tag.add_argument("--min-score", type=_score, default=None,
                     help="show tags whose score (the estimated probability that the tag is right) is at least this; "
                          "default: the model's 'likely' cut-off (0.5 for the built-in model); 0 shows every tag")
    tag.add_argument("--model", action="append", default=None,
                     help="bundle folder, config.yaml or config URL, 'default' (the built-in model, used when none is "
                          "given) or 'seed' (the original app's model, downloaded and imported on first use); repeat "
                          "it to tag with several models, e.g. your own bundle and 'default' (each model's tags stay a group)")
    tag.add_argument("--format", choices=FORMATS, default="table", help="output format (default table)")
    tag.add_argument("--no-broader", action="store_true", help="leave out broader tags such as 'dog', 'animal'")
    tag.add_argument("--order", choices=("specific", "score"), default=None,
                     help="rank by expected specificity (default) or by raw score")
    tag.add_argument("--batch-size", type=_positive, default=16, help="images per encoder call (default 16)")
    tag.add_argument("--threads", type=_positive, default=None, help="threads for decoding and the models (default: all cores)")
    tag.add_argument("--max-pixels", type=_positive, default=None, help="refuse images with more pixels than this")
    tag.add_argument("--xmp", action="store_true",
                     help="write/merge XMP sidecars (dc:subject keywords, lr:hierarchicalSubject paths)")
    tag.add_argument("--xmp-name", choices=("PHOTO.ext.xmp", "PHOTO.xmp"), default="PHOTO.ext.xmp",
                     help="sidecar name: photo.jpg.xmp (darktable, digiKam; default) or photo.xmp "
                          "(Lightroom, Capture One)")
    tag.add_argument("--json-sidecar", action="store_true", help="write PHOTO.tags.json sidecars")
    tag.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    train = commands.add_parser("train", help="train an embedding model on labelled images and export a bundle")
    train.set_defaults(run=_train)
    _data_arguments(train)
    train.add_argument("--out", required=True, help="bundle folder to write (new, empty, or a bundle to replace)")
    train.add_argument("--force", action="store_true", help="write into a folder that holds other files too "
                                                            "(they stay; only an old bundle's own files go)")
    train.add_argument("--backbone", choices=("mobilenet_v2", "efficientnet_lite0"), default="mobilenet_v2")
    train.add_argument("--embedding-dim", type=_positive, default=50)
    train.add_argument("--input-size", type=_positive, default=224)
    train.add_argument("--epochs", type=_positive, default=10)
    train.add_argument("--batch-size", type=_positive, default=64, help="per replica (default 64)")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--margin", type=float, default=0.4, help="triplet margin alpha (default 0.4)")
    train.add_argument("--val-fraction", type=float, default=0.1)
    train.add_argument("--patience", type=_positive, default=3, help="early stopping: epochs without a better val loss")
    train.add_argument("--seed", type=int, default=0)
    frozen = train.add_mutually_exclusive_group()
    frozen.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=None,
                        help="train only the head and labels on cached features (default for efficientnet_lite0)")
    frozen.add_argument("--train-backbone", dest="freeze_backbone", action="store_false")
    train.add_argument("--weights", default=None, help="mobilenet_v2 start: 'imagenet' (needs internet) or a weights file")
    train.add_argument("--alpha", type=float, default=1.0, help="mobilenet_v2 width multiplier")
    train.add_argument("--checkpoint-dir", default=None, help="checkpoints; rerun with the same folder to resume")
    train.add_argument("--int8", action="store_true",
                       help="also write a copy with a full-integer (int8) encoder in OUT/int8, and how often it keeps "
                            "the float bundle's best tag on the validation photos")
    train.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="auto: mixed_bfloat16 on GPUs of compute capability 8+, mixed_float16 on 7.x, float32 on CPU")
    train.add_argument("--jit-compile", choices=("auto", "on", "off"), default="auto",
                       help="XLA; auto: on for one GPU, off on CPU and with several GPUs or workers")
    train.add_argument("-q", "--quiet", action="store_true")

    prepare = commands.add_parser("prepare", help="pre-resize a training set once (short side --size, JPEG, same layout)")
    prepare.set_defaults(run=_prepare)
    prepare.add_argument("source", help="folder of images")
    prepare.add_argument("--out", required=True, help="folder to write")
    prepare.add_argument("--size", type=_positive, default=256, help="short side in pixels (default 256)")
    prepare.add_argument("-q", "--quiet", action="store_true")

    evaluate = commands.add_parser("evaluate", help="mAP (Open Images protocol), hit@1/5/20 of a bundle on labelled images")
    evaluate.set_defaults(run=_evaluate)
    _data_arguments(evaluate)
    evaluate.add_argument("--model", default=None, help="bundle folder, config.yaml, URL or 'seed' (default: the built-in model)")
    evaluate.add_argument("--per-class", default=None, metavar="CSV", help="write AP per class to this CSV")
    evaluate.add_argument("-q", "--quiet", action="store_true")

    index = commands.add_parser("index", help="index a collection (SQLite): paths, hashes, embeddings, tags; "
                                              "re-runs process only new or changed files")
    index.set_defaults(run=_index)
    index.add_argument("paths", nargs="+", metavar="PATH", help="folders or files")
    index.add_argument("--out", required=True, metavar="INDEX", help="the index file (created or updated)")
    index.add_argument("--model", default=None, help="bundle folder, config.yaml, URL or 'seed' (default: the built-in model)")
    index.add_argument("--batch-size", type=_positive, default=32)
    index.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="ray: tag on Ray Data workers (RAY_ADDRESS for a cluster); same index either way")
    index.add_argument("-q", "--quiet", action="store_true")

    search = commands.add_parser("search", help="images of an index ranked by one tag's score")
    search.set_defaults(run=_search)
    search.add_argument("index", metavar="INDEX")
    search.add_argument("tag", help="a tag's name, synonym or id, e.g. dog, alsatian, cars")
    search.add_argument("--top-k", type=_positive, default=20)
    search.add_argument("--min-score", type=_score, default=None,
                        help="only photos whose tag scores at least this (default: the model's 'likely' cut-off; "
                             "0: every photo that has the tag among its stored tags)")
    search.add_argument("--format", choices=("table", "jsonl"), default="table")

    similar = commands.add_parser("similar", help="images of an index ranked by similarity to a photo")
    similar.set_defaults(run=_similar)
    similar.add_argument("index", metavar="INDEX")
    similar.add_argument("photo", help="any photo, in the index or not")
    similar.add_argument("--top-k", type=_positive, default=20)
    similar.add_argument("--format", choices=("table", "jsonl"), default="table")

    app = commands.add_parser("app", help="run the Streamlit app (port from --port, else $PORT, else 8501)")
    app.set_defaults(run=_app)
    app.add_argument("--port", type=_positive, default=None)
    app.add_argument("--address", default=None, help="address to bind (default 0.0.0.0 when $PORT is set, else localhost)")

    serve = commands.add_parser("serve", help="answer tag requests over HTTP: our JSON, Rekognition's DetectLabels and "
                                              "Google Vision's LABEL_DETECTION (needs the api extra; docs/api.md)")
    serve.set_defaults(run=_serve)
    serve.add_argument("--model", action="append", default=None, help="as for tag (repeatable); loaded once at start")
    serve.add_argument("--host", default=None, help="address to bind (default 0.0.0.0 with keys; without keys "
                                                    "127.0.0.1, the only address allowed then)")
    serve.add_argument("--port", type=_positive, default=None, help="port (default $PORT, else 8080)")
    serve.add_argument("--api-keys", default=None, metavar="FILE", help="API keys, one a line (also $IMAGE_TAGS_API_KEYS, "
                                                                        "comma separated)")
    serve.add_argument("--aws-credentials", default=None, metavar="FILE",
                       help="ACCESS_KEY_ID:SECRET pairs, one a line, for SigV4 (also $IMAGE_TAGS_AWS_CREDENTIALS)")
    serve.add_argument("--pool", type=_positive, default=None,
                       help="predictors working at once (default: the cores; 1 per replica with --engine ray)")
    serve.add_argument("--queue", type=int, default=None, help="requests that may wait for the pool (default 4 per "
                                                               "predictor); more are answered 503 with Retry-After")
    serve.add_argument("--max-body", type=_positive, default=10_000_000, help="bytes per request (default 10 MB)")
    serve.add_argument("--max-pixels", type=_positive, default=None, help="refuse images with more pixels than this")
    serve.add_argument("--deadline", type=float, default=30.0, help="seconds a request may take (default 30)")
    serve.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="ray: the same app in --replicas Ray Serve replicas (RAY_ADDRESS for a cluster)")
    serve.add_argument("--replicas", type=_positive, default=2, help="replicas with --engine ray (default 2)")
    serve.add_argument("--test-delay", type=float, default=0.0,
                       help="for tests only: each job sleeps this many seconds first, to fill the queue on purpose")

    seed = commands.add_parser("import-seed", help="turn the original app's image_representation.h5 and labels.json "
                                                   "into a bundle (what --model seed uses)")
    seed.set_defaults(run=_import_seed)
    seed.add_argument("--h5", required=True, help="the original app's image_representation.h5")
    seed.add_argument("--labels", required=True, help="the original app's labels.json")
    seed.add_argument("--out", default=None, help="bundle folder to write (default: where --model seed looks, in "
                                                  "the cache); new, empty, or a bundle to replace")
    seed.add_argument("--force", action="store_true", help="write into a folder that holds other files too "
                                                           "(they stay; only an old bundle's own files go)")

    cache = commands.add_parser("cache", help="the downloaded bundles: list them, or clear them")
    cache.set_defaults(run=_cache)
    cache.add_argument("action", choices=("list", "clear"))
    cache.add_argument("--dir", default=None, help="the cache folder (default $IMAGE_TAGS_CACHE or ~/.cache/image_tag_suggestion)")
    return parser


def _say(message: str) -> None:
    """A line of news on stderr (stdout is for results)."""
    print(f"image-tags: {message}", file=sys.stderr)


def _progress(total: int, what: str, quiet: bool):
    """A progress bar on stderr, or None when quiet."""
    if quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr, desc=what)


def _with_progress(what: str, quiet: bool, work, errors: tuple):
    """Run ``work(on_start, on_done)`` under a progress bar; a listed error is printed
    and gives None (the caller exits 2)."""
    progress = _progress(0, what, quiet)
    try:
        return work(lambda total: progress.reset(total=total) if progress else None,
                    progress.update if progress else None)
    except errors as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return None
    finally:
        if progress:
            progress.close()


def _report_failures(failed: list[str]) -> int:
    for error in failed:
        print(f"image-tags: {error}", file=sys.stderr)
    return 1 if failed else 0


def _write_sidecars(result, models, args) -> None:
    from .sidecars import keywords_and_paths, write_json, write_xmp

    groups = [(result.tags, models[0][2])] + [(result.more[name], lp) for name, _, lp in models[1:]]
    if args.xmp:
        write_xmp(result.file, *keywords_and_paths([(tags, lp.labels) for tags, lp in groups]), naming=args.xmp_name)
    if args.json_sidecar:
        write_json(result.file, [t for tags, _ in groups for t in tags], ", ".join(name for name, _, _ in models))


def _data_arguments(parser) -> None:
    parser.add_argument("--data", required=True, help="Open Images folder, path,tags CSV, or folder of tag folders")
    parser.add_argument("--format", choices=("openimages", "csv", "folders"), required=True)
    parser.add_argument("--images", default=None, help="image folder (Open Images) or root for CSV paths")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


def _cache(args) -> int:
    from .bundle import cached_bundles, clear_cache, default_cache_dir

    folder = Path(args.dir) if args.dir else default_cache_dir()
    if args.action == "clear":
        bundles, size = clear_cache(folder)
        print(f"{folder}: removed {bundles} downloaded bundles ({size / 1e6:.1f} MB)")
        return 0
    bundles = cached_bundles(folder)
    for entry, size in bundles:
        print(f"{size / 1e6:8.1f} MB  {entry}")
    print(f"{folder}: {len(bundles)} downloaded bundles")
    return 0


def _import_seed(args) -> int:
    from .bundle import BundleError
    from .seed_model import import_files, seed_folder

    try:
        out = import_files(args.h5, args.labels, args.out or seed_folder(), force=args.force)
    except BundleError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


def _index(args) -> int:
    from .bundle import BundleError, load_bundle
    from .collection import CollectionError, build_index
    from .predictors import ImagePredictor, LabelPredictor
    from .seed_model import resolve_model

    try:
        bundle = load_bundle(resolve_model(args.model, _say))
    except BundleError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    report = _with_progress("indexing", args.quiet, lambda on_start, on_done: build_index(
        args.paths, args.out, ImagePredictor(bundle), LabelPredictor(bundle), args.batch_size,
        on_start=on_start, on_done=on_done, engine=args.engine, on_wait=_say), (CollectionError,))
    if report is None:
        return 2
    print(f"{args.out}: {report.summary()}")
    return _report_failures(report.failed)


def _search(args) -> int:
    from .collection import CollectionError, search_tag

    try:
        title, hits = search_tag(args.index, args.tag, args.top_k, args.min_score)
    except CollectionError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 1
    _print_hits(hits, args.format)
    if not hits:
        print(f"image-tags: no indexed image is likely to show {title!r} (--min-score 0 shows weaker matches)",
              file=sys.stderr)
    return 0


def _similar(args) -> int:
    from .bundle import BundleError, load_bundle
    from .collection import CollectionError, EmbeddingMatrix, index_meta
    from .images import ImageError
    from .predictors import ImagePredictor

    try:
        meta = index_meta(args.index)
        matrix = EmbeddingMatrix.load(args.index)
        embedding, _ = ImagePredictor(load_bundle(meta["model_path"])).predict_from_file(args.photo)
    except (CollectionError, BundleError, ImageError) as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 1
    _print_hits(matrix.nearest(embedding, args.top_k), args.format)
    return 0


def _print_hits(hits, output_format: str) -> None:
    import json

    for hit in hits:
        if output_format == "jsonl":
            print(json.dumps({"file": hit.path, "score": round(hit.score, 4)}))
        else:
            print(f"{hit.score:6.3f}  {hit.path}")


def _load_data(args):
    from .training.datasets import DatasetError, load_dataset

    try:
        dataset = load_dataset(args.data, args.format, args.images)
    except DatasetError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return None
    print(f"data: {dataset.summary()}", file=sys.stderr)
    return dataset


def _train(args) -> int:
    import json

    dataset = _load_data(args)
    if dataset is None:
        return 2
    from .files import OutputFolderError
    from .training.train import TrainConfig, train

    config = TrainConfig(
        backbone=args.backbone, embedding_dim=args.embedding_dim, input_size=args.input_size, epochs=args.epochs,
        batch_size=args.batch_size, learning_rate=args.learning_rate, margin=args.margin,
        val_fraction=args.val_fraction, patience=args.patience, seed=args.seed,
        freeze_backbone=args.freeze_backbone, weights=args.weights, alpha=args.alpha, precision=args.precision,
        jit_compile={"auto": None, "on": True, "off": False}[args.jit_compile], int8=args.int8,
    )
    try:
        metrics = train(dataset, config, args.out, checkpoint_dir=args.checkpoint_dir, verbose=0 if args.quiet else 1,
                        force=args.force)
    except OutputFolderError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    for warning in metrics["warnings"]:
        print(f"image-tags: warning: {warning}", file=sys.stderr)
    print(f"image-tags: bundle written to {args.out} (report: {args.out}/report.png)", file=sys.stderr)
    return 0


def _prepare(args) -> int:
    from .training.prepare import prepare_images

    report = _with_progress("preparing", args.quiet, lambda on_start, on_done: prepare_images(
        args.source, args.out, args.size, on_start=on_start, on_done=on_done), (ValueError,))
    if report is None:
        return 2
    print(f"{args.out}: {report.written} written, {report.skipped} already prepared, {len(report.failed)} failed")
    return _report_failures(report.failed)


def _evaluate(args) -> int:
    import json

    from .bundle import BundleError
    from .seed_model import resolve_model
    from .training.evaluation import evaluate_bundle

    dataset = _load_data(args)
    if dataset is None:
        return 2
    def work(on_start, on_done):
        on_start(len(dataset.examples))
        return evaluate_bundle(resolve_model(args.model, _say), dataset, on_done=on_done)

    evaluation = _with_progress("evaluating", args.quiet, work, (BundleError,))
    if evaluation is None:
        return 2
    if args.per_class:
        evaluation.write_per_class_csv(args.per_class)
    print(json.dumps(evaluation.as_dict(), indent=2))
    return 0


def _app(args) -> int:
    """Replace this process with ``streamlit run`` on the app (what Docker and Heroku start)."""
    import os

    port = args.port or int(os.environ.get("PORT", "8501"))
    address = args.address or ("0.0.0.0" if "PORT" in os.environ else "localhost")
    script = Path(__file__).resolve().parent / "main.py"
    # A deployment faces the public: no developer toolbar (Deploy, rerun, clear cache), no tracebacks.
    command = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
               "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--client.toolbarMode", "viewer", "--client.showErrorDetails", "none"]
    os.execv(sys.executable, command)
    return 0  # not reached


def _serve(args) -> int:
    """Build the server's settings from the flags and run it (api/server.py)."""
    try:
        from .api import Settings
        from .api.auth import Credentials
        from .bundle import BundleError
        from .api.server import run
        from .images import DEFAULT_MAX_PIXELS
    except ImportError as exc:
        print(f"image-tags: serve needs the api extra ({exc}): pip install 'image_tag_suggestion[api]'", file=sys.stderr)
        return 2
    try:
        credentials = Credentials.load(args.api_keys, args.aws_credentials)
    except (OSError, ValueError) as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    if (args.queue is not None and args.queue < 0) or args.deadline <= 0:
        print("image-tags: --queue must be 0 or more and --deadline more than 0", file=sys.stderr)
        return 2
    pool = args.pool or (1 if args.engine == "ray" else None)
    settings = Settings(models=args.model or ["default"], queue=args.queue, max_body=args.max_body,
                        max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS, deadline=args.deadline,
                        credentials=credentials, test_delay=args.test_delay, **({"pool": pool} if pool else {}))
    try:
        return run(settings, args.host, args.port, _say, engine=args.engine, replicas=args.replicas)
    except BundleError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2


def _tag(args) -> int:
    from .bundle import BundleError, load_bundle
    from .formats import writer
    from .images import DEFAULT_MAX_PIXELS
    from .predictors import ImagePredictor, LabelPredictor
    from .seed_model import resolve_model
    from .tagging import find_images, tag_files

    models = []
    try:
        for location in args.model or ["default"]:
            bundle = load_bundle(resolve_model(location, _say))
            name = bundle.name if bundle.name not in [m[0] for m in models] else f"{bundle.name} {len(models) + 1}"
            predictor = ImagePredictor(bundle, num_threads=args.threads, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
            models.append((name, predictor, LabelPredictor(bundle)))
    except BundleError as exc:
        print(f"image-tags: {exc}", file=sys.stderr)
        return 2
    (main_name, image_predictor, label_predictor), also = models[0], models[1:]
    files = find_images(args.paths)
    if not files:
        print("image-tags: no image files found under " + ", ".join(args.paths), file=sys.stderr)
        return 1

    progress = _progress(len(files), "tagging", args.quiet or len(files) <= PROGRESS_THRESHOLD)
    write = writer(args.format, sys.stdout, main_model=main_name)
    failures = 0
    try:
        for result in tag_files(
            files, image_predictor, label_predictor,
            top_k=args.top_k, min_score=args.min_score, include_broader=not args.no_broader,
            order=args.order, batch_size=args.batch_size, also=also,
            on_done=progress.update if progress else None,
        ):
            if result.ok and (args.xmp or args.json_sidecar):
                try:
                    _write_sidecars(result, models, args)
                except (OSError, ValueError) as exc:
                    result.error = f"{result.file}: tags found but the sidecar could not be written ({exc})"
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
