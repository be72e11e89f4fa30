"""Tag quality on the labelled dev set: are the tags we show by default ones a user keeps?

    .venv/bin/python benchmarks/devset.py                 # once: builds the dev set
    .venv/bin/python benchmarks/tag_quality.py [--model DIR] [--min-score X] [--curve curve.png]

Prints, for the tuning part and the held-out part of the dev set (``devset.py``), with the
bundle's default settings (its "likely" cut-off, at most 20 tags):
- tags shown per photo, and the precision of the shown tags (share that are right);
- coverage: share of photos that keep at least one tag;
- entry-level shown: share of photos shown their entry tag or a finer right one
  ("dog" or "Golden Retriever" for a golden retriever; "animal" does not count);
- hit@5 and precision@5 of the top-20 list (no cut-off): share of photos with their entry
  tag or a finer right one among the first five tags, and share of the first five that are right;
- people: share of photos with people that get "person", and of photos without people
  that get it anyway (false-person rate);
and draws the precision-coverage curve over cut-offs (matplotlib PNG). "Right" is judged
against WordNet as ``devset.py`` explains. ``--rules`` prints what each everyday-tag rule
(``conversion/everyday_tags.yaml``, kept or not) changes: how often its tag is shown, how
often rightly, and the precision and coverage with and without it.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import devset  # noqa: E402

from image_tag_suggestion import ImagePredictor, LabelPredictor  # noqa: E402
from image_tag_suggestion.bundle import DEFAULT_CONFIG, load_bundle  # noqa: E402
from image_tag_suggestion.scoring import Tag  # noqa: E402

TOP_K = 20
PERSON_ID, PORTRAIT_ID, PEOPLE_ID = "n00007846", "n03987079", "n07942152"  # WordNet: person, portrait, people


class Judge:
    """Says whether a tag is right for a dev-set photo (see ``devset.py``)."""

    def __init__(self, vocabulary: devset.Vocabulary):
        self.vocabulary = vocabulary

    def _offset(self, tag_id: str) -> int | None:
        if len(tag_id) == 9 and tag_id[0] == "n" and tag_id[1:].isdigit():
            offset = int(tag_id[1:])
            return offset if offset in self.vocabulary.synsets else None
        return None

    def right(self, tag_id: str, photo: devset.Photo) -> bool:
        if tag_id == PERSON_ID and photo.people:
            return True
        if tag_id in (PORTRAIT_ID, PEOPLE_ID):  # judged by the people column alone
            return photo.people == ("portrait" if tag_id == PORTRAIT_ID else "group")
        offset = self._offset(tag_id)
        if offset is None:
            return False
        above = self.vocabulary.ancestors(offset)
        for known in photo.truth + photo.entry + photo.scene:  # a scene word counts as itself or broader, not finer
            known_offset = int(known[1:])
            if offset == known_offset or offset in self.vocabulary.ancestors(known_offset):
                return True
        return any(int(t[1:]) in above for t in photo.truth)  # finer than the truth

    def entry_level(self, tag_id: str, photo: devset.Photo) -> bool:
        """Right, and not merely broader than the entry tag ("animal" for a dog)."""
        if not self.right(tag_id, photo):
            return False
        offset = self._offset(tag_id)
        if offset is None or tag_id in (PORTRAIT_ID, PEOPLE_ID):
            return True
        return not any(offset in self.vocabulary.ancestors(int(e[1:])) for e in photo.entry)


@dataclass
class Figures:
    photos: int
    tags_per_photo: float
    precision: float
    coverage: float
    entry_shown: float
    hit5: float
    precision5: float
    person_hit: float | None
    false_person: float | None
    people_photos: int

    def row(self, name: str) -> str:
        hit = f"{self.person_hit:6.2f} ({self.people_photos:2d})" if self.person_hit is not None else "     -     "
        false = f"{self.false_person:6.3f}" if self.false_person is not None else "     -"
        people = f"{hit}  {false}"
        return (f"{name:9s} {self.photos:6d} {self.tags_per_photo:7.2f} {self.precision:9.3f} {self.coverage:8.3f} "
                f"{self.entry_shown:8.3f} {self.hit5:6.3f} {self.precision5:6.3f}   {people}")


HEADER = ("part      photos  shown/ precision coverage    entry  hit@5 prec@5   person hit  false"
          "\n                   photo                      shown                   (photos)    person")


def figures(photos: list[devset.Photo], shown: list[list[Tag]], ranked: list[list[Tag]], judge: Judge) -> Figures:
    """The benchmark's figures for ``shown`` tags (after the cut-off) and ``ranked`` top-20 lists."""
    right = [[judge.right(t.id, p) for t in tags] for tags, p in zip(shown, photos)]
    n_shown = sum(len(r) for r in right)
    with_people = [i for i, p in enumerate(photos) if p.people]
    without = [i for i, p in enumerate(photos) if not p.people]

    def has_person(i: int) -> bool:
        return any(t.id == PERSON_ID for t in shown[i])

    return Figures(
        photos=len(photos),
        tags_per_photo=n_shown / max(len(photos), 1),
        precision=sum(map(sum, right)) / max(n_shown, 1),
        coverage=float(np.mean([bool(tags) for tags in shown])),
        entry_shown=float(np.mean([any(judge.entry_level(t.id, p) for t in tags) for tags, p in zip(shown, photos)])),
        hit5=float(np.mean([any(judge.entry_level(t.id, p) for t in tags[:5]) for tags, p in zip(ranked, photos)])),
        precision5=float(np.mean([judge.right(t.id, p) for tags, p in zip(ranked, photos) for t in tags[:5]])),
        person_hit=float(np.mean([has_person(i) for i in with_people])) if with_people else None,
        false_person=float(np.mean([has_person(i) for i in without])) if without else None,
        people_photos=len(with_people),
    )


def embed(photos: list[devset.Photo], folder: Path, image_predictor: ImagePredictor) -> np.ndarray:
    from image_tag_suggestion.tagging import tag_files

    files = [str(folder / p.file) for p in photos]
    results = list(tag_files(files, image_predictor, LabelPredictor(image_predictor.bundle), top_k=1))
    failed = [r.file for r in results if not r.ok]
    if failed:
        raise SystemExit(f"cannot read {failed}")
    return np.stack([r.embedding for r in results])


def with_every_rule(label_predictor: LabelPredictor) -> tuple[LabelPredictor, list]:
    """A copy of ``label_predictor`` whose table has every rule of the rules table, kept or not."""
    import copy

    from image_tag_suggestion.conversion.imagenet_vocabulary import everyday_tags
    from image_tag_suggestion.labels import LabelTable
    from image_tag_suggestion.scoring import Scorer

    table = label_predictor.labels
    rules = everyday_tags(table.class_ids, kept_only=False)
    missing = [r for r in rules if r.wnid not in table.ids]
    extended = LabelTable(
        class_ids=table.class_ids, class_names=table.class_names, embeddings=table.embeddings, bias=table.bias,
        broader_ids=table.broader_ids + [r.wnid for r in missing],
        broader_names=table.broader_names + [f"{r.name} (rule)" for r in missing],
        broader_members=table.broader_members + [list(r.members) for r in missing],
        class_synonyms=table.class_synonyms, broader_synonyms=table.broader_synonyms + [[] for _ in missing],
        people=table.people,
    )
    predictor = copy.copy(label_predictor)
    predictor.labels, predictor.scorer = extended, Scorer(extended, label_predictor.scorer.rule)
    return predictor, rules


def with_head(label_predictor: LabelPredictor, data: Path) -> LabelPredictor:
    """A copy of ``label_predictor`` whose table gets a scene head fitted from ``data``
    (its own head, if any, replaced)."""
    import copy

    from image_tag_suggestion.conversion.scene_tags import scene_head_table
    from image_tag_suggestion.scoring import Scorer

    fitted, report = scene_head_table(label_predictor.labels, data)
    print(f"scene head: {report}")
    predictor = copy.copy(label_predictor)
    predictor.labels, predictor.scorer = fitted, Scorer(fitted, label_predictor.scorer.rule)
    return predictor


def rule_effects(photos, embeddings, parts, label_predictor, min_score, judge) -> list[str]:
    """One line per rule: shown / right on each part, and precision and coverage without -> with it."""
    predictor, rules = with_every_rule(label_predictor)
    lines = []
    for rule in rules:
        cells = []
        for name, rows in parts.items():
            chosen = [photos[i] for i in rows]
            with_rule = predictor.predict_batch(embeddings[rows], top_k=TOP_K, min_score=min_score)
            without = [[t for t in tags if t.id != rule.wnid] for tags in with_rule]
            shown = [(t, p) for tags, p in zip(with_rule, chosen) for t in tags if t.id == rule.wnid]
            a, b = figures(chosen, without, without, judge), figures(chosen, with_rule, with_rule, judge)
            cells.append(f"{name}: shown {len(shown)}, right {sum(judge.right(t.id, p) for t, p in shown)}; "
                         f"precision {a.precision:.3f} -> {b.precision:.3f}, coverage {a.coverage:.3f} -> {b.coverage:.3f}")
        kept = "kept" if rule.wnid in label_predictor.labels.ids else "not kept"
        lines.append(f"{rule.name} ({kept}; {len(rule.members)} classes): " + "; ".join(cells))
    return lines


def draw_curve(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], chosen: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.4, 4.8))
    for offset, (name, (thresholds, precision, coverage)) in enumerate(curves.items()):
        axis.plot(coverage, precision, marker=".", label=name)
        at = int(np.argmin(np.abs(thresholds - chosen)))
        axis.annotate(f"{name}: min score {chosen:.2f}", (coverage[at], precision[at]), textcoords="offset points",
                      xytext=(-150, -25 - 18 * offset), arrowprops={"arrowstyle": "->"})
    axis.set_xlabel("coverage (share of photos with at least one tag)")
    axis.set_ylabel("precision of shown tags")
    axis.set_title(title)
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devset", type=Path, default=devset.DEFAULT_OUT)
    parser.add_argument("--model", default=str(DEFAULT_CONFIG))
    parser.add_argument("--min-score", type=float, default=None, help="cut-off (default: the bundle's)")
    parser.add_argument("--curve", type=Path, default=None, help="write the precision-coverage curve to this PNG")
    parser.add_argument("--show", type=int, default=0, help="print the shown tags of this many held-out photos")
    parser.add_argument("--rules", action="store_true", help="print each everyday-tag rule's effect")
    parser.add_argument("--head", type=Path, default=None,
                        help="fit a scene head from this data file (scene_head_data.py) instead of the bundle's")
    args = parser.parse_args()

    photos = devset.load(args.devset)
    judge = Judge(devset.Vocabulary())
    bundle = load_bundle(args.model)
    image_predictor, label_predictor = ImagePredictor(bundle), LabelPredictor(bundle)
    if args.head:
        label_predictor = with_head(label_predictor, args.head)
    start = time.perf_counter()
    embeddings = embed(photos, args.devset, image_predictor)
    seconds = time.perf_counter() - start
    min_score = label_predictor.default_min_score if args.min_score is None else args.min_score
    ranked = label_predictor.predict_batch(embeddings, top_k=TOP_K, min_score=0.0)
    shown = label_predictor.predict_batch(embeddings, top_k=TOP_K, min_score=min_score)

    print(f"{bundle.name}: {len(photos)} photos embedded in {seconds:.1f} s; cut-off (min score) {min_score:g}, "
          f"at most {TOP_K} tags\n")
    print(HEADER)
    parts = {"tune": [i for i, p in enumerate(photos) if p.split == "tune"],
             "held-out": [i for i, p in enumerate(photos) if p.split == "held-out"]}
    for name, rows in parts.items():
        print(figures([photos[i] for i in rows], [shown[i] for i in rows], [ranked[i] for i in rows], judge).row(name))

    held_out = parts["held-out"]
    sources: dict[str, list[bool]] = {}
    for i in held_out:
        sources.setdefault(photos[i].photo.split(":")[0], []).append(bool(shown[i]))
    print("\nheld-out coverage by source: " + ", ".join(f"{name} {sum(kept)}/{len(kept)}"
                                                      for name, kept in sorted(sources.items(), key=lambda s: -len(s[1]))))
    lost = [photos[i].photo for i in held_out if not shown[i]]
    if lost:
        print(f"\nheld-out photos left without a tag ({len(lost)}): " + ", ".join(sorted(lost)[:40])
              + (" ..." if len(lost) > 40 else ""))
    for i in held_out[: args.show]:
        marks = ", ".join(f"{t.label} {t.score:.2f}{'' if judge.right(t.id, photos[i]) else ' (x)'}" for t in shown[i])
        print(f"{photos[i].photo} [{', '.join(photos[i].truth_names)}]: {marks or '-'}")

    if args.rules:
        print("\neveryday-tag rules:\n" + "\n".join(rule_effects(photos, embeddings, parts, label_predictor, min_score, judge)))

    if args.curve:
        thresholds = np.round(np.arange(0.0, 1.0, 0.02), 2)
        curves = {}
        for name, rows in parts.items():
            precision, coverage = [], []
            for threshold in thresholds:
                tags = label_predictor.predict_batch(embeddings[rows], top_k=TOP_K, min_score=float(threshold))
                result = figures([photos[i] for i in rows], tags, tags, judge)
                precision.append(result.precision)
                coverage.append(result.coverage)
            curves[name] = (thresholds, np.array(precision), np.array(coverage))
        draw_curve(curves, min_score, args.curve, f"{bundle.name}: shown tags over min score 0..0.98")
        print(f"\ncurve: {args.curve}")


if __name__ == "__main__":
    main()
