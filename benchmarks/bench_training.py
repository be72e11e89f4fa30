"""Training throughput: prints figures, asserts nothing. The real configuration is the
seed's MobileNetV2 at 224 px, batch 256, on a GPU, where training is bound by its input:
the tf.data input should deliver at least 2,000 images/s from pre-resized files:

    .venv/bin/python benchmarks/bench_training.py                  # batch 256 on a GPU, 32 on a CPU
    .venv/bin/python benchmarks/bench_training.py --batch-size 256 --steps 40

Measured in one run, in images per second:
- input: the tf.data pipeline alone (read, decode, random crop, flip, colour, batch) over
  JPEGs with short side 256, as ``image-tags prepare`` writes them;
- steps: training steps alone on one batch held in memory, for each precision and XLA
  setting, with ratios against float32 without XLA measured in the same run;
- fit: both together (``model.fit`` over the files) with the settings ``auto`` picks.
The label count matters (semi-hard negatives are mined over every label): 9,605 by
default, Open Images V6's trainable classes.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_serving import make_folder, source_photos  # noqa: E402


def build_model(precision: str, jit_compile: bool | None, args, n_labels: int):
    import keras

    from image_tag_suggestion.training.models import TagEmbeddingModel, build_backbone, build_head, build_image_encoder
    from image_tag_suggestion.training.train import dtype_policy

    with dtype_policy(precision):
        backbone = build_backbone("mobilenet_v2", args.input_size, None, args.alpha)
        encoder = build_image_encoder(backbone, build_head(backbone.output_shape[-1], args.embedding_dim))
        model = TagEmbeddingModel(encoder, n_labels, args.embedding_dim).build_now()
        model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile="auto" if jit_compile is None else jit_compile)
    return model


def timed_fit(model, data, warmup: int, steps: int, batch_size: int) -> float:
    """Images per second over ``steps`` steps, after ``warmup`` steps (tracing, XLA compilation)."""
    model.fit(data, epochs=1, steps_per_epoch=warmup, verbose=0)
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)  # ends with the logs read back: the device is done
    return steps * batch_size / (time.perf_counter() - start)


def labelled_files(folder: Path, count: int, n_labels: int, seed: int = 0):
    from image_tag_suggestion.training.datasets import Example, LabeledDataset

    rng = random.Random(seed)
    paths = make_folder(folder, source_photos(), count, size=(341, 256))
    examples = [Example(str(p), tuple(rng.sample(range(n_labels), rng.randint(1, 5))), ()) for p in paths]
    return LabeledDataset([f"/m/{i}" for i in range(n_labels)], [f"label {i}" for i in range(n_labels)], examples, False)


def main() -> None:
    import tensorflow as tf

    from image_tag_suggestion.training.pipeline import image_dataset
    from image_tag_suggestion.training.train import choose_precision

    gpus = tf.config.list_physical_devices("GPU")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256 if gpus else 32)
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width (1.0: the seed's)")
    parser.add_argument("--embedding-dim", type=int, default=50)
    parser.add_argument("--labels", type=int, default=9605)
    parser.add_argument("--files", type=int, default=1024, help="JPEG files made for the input and fit figures")
    parser.add_argument("--steps", type=int, default=30 if gpus else 6)
    parser.add_argument("--warmup", type=int, default=5 if gpus else 2)
    parser.add_argument("--precisions", default="float32,mixed_float16,mixed_bfloat16")
    parser.add_argument("--xla", default="off,on", help="XLA settings to time the steps with: off,on")
    args = parser.parse_args()
    batch = args.batch_size
    device = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "CPU only"
    print(f"device: {device}; {os.cpu_count()} CPU cores; MobileNetV2 alpha {args.alpha}, {args.input_size} px, "
          f"batch {batch}, {args.labels} labels, {args.embedding_dim}-d")

    with tempfile.TemporaryDirectory() as tmp:
        dataset = labelled_files(Path(tmp) / "images", args.files, args.labels)
        files = image_dataset(dataset, args.input_size, (127.5, 127.5), batch, training=True).repeat()

        # Input pipeline alone.
        iterator = iter(files)
        for _ in range(3):
            next(iterator)
        n_batches = max(4, (2 * args.files) // batch)
        start = time.perf_counter()
        for _ in range(n_batches):
            next(iterator)
        input_rate = n_batches * batch / (time.perf_counter() - start)
        print(f"input (tf.data from {args.files} JPEGs 341x256): {input_rate:,.0f} img/s")

        # Training steps alone, on one in-memory batch.
        rng = np.random.default_rng(0)
        mask = np.zeros((batch, args.labels), np.uint8)
        positive = rng.integers(0, args.labels, batch).astype(np.int32)
        mask[np.arange(batch), positive] = 1
        negative = (positive + 1) % args.labels
        images = rng.normal(size=(batch, args.input_size, args.input_size, 3)).astype(np.float32)
        in_memory = tf.data.Dataset.from_tensors((images, positive, negative, mask)).repeat()
        rates = {}
        for precision in args.precisions.split(","):
            for xla in args.xla.split(","):
                model = build_model(precision, xla == "on", args, args.labels)
                rates[precision, xla] = timed_fit(model, in_memory, args.warmup, args.steps, batch)
                base = rates.get(("float32", "off"))
                ratio = f" ({rates[precision, xla] / base:.2f}x float32 without XLA)" if base else ""
                print(f"steps {precision:15s} XLA {xla:3s}: {rates[precision, xla]:,.0f} img/s{ratio}", flush=True)
                del model

        # Both together, with what `image-tags train` picks by default.
        precision = choose_precision("auto")
        model = build_model(precision, None, args, args.labels)
        fit_rate = timed_fit(model, files, args.warmup, args.steps, batch)
        print(f"fit over files ({precision}, XLA {'on' if model.jit_compile else 'off'}): {fit_rate:,.0f} img/s; "
              f"input alone {input_rate / fit_rate:.2f}x that")


if __name__ == "__main__":
    main()
