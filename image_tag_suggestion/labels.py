"""The label table of a bundle: which tags exist and what each one is made of.

Four sorts of tag live in one table, in this order:
- a *class* has an embedding row (and optionally a bias): it is scored directly;
- a *broader* tag (WordNet parent such as "dog") has no row of its own: its score
  is the sum of the scores of its member classes;
- a *people* tag ("person", "portrait", "group of people") is scored from the faces the
  bundle's face detector found (a *signal*, see ``faces.py``), and from member classes
  where it has them ("scuba diver" also says "person");
- a *scene* tag ("beach", "city", "sky": what a photo shows as a whole, which a classifier of
  objects has no class for) is scored by the *scene head*: one row of weights per tag it
  scores, a logistic regression on the image embedding. A head row may also score a tag of
  another sort ("person" seen from behind, "church"); that tag then keeps the higher score.
  A scene tag may instead be a photo property scored from a pixel *signal* ("black and
  white" from the photo's colour, see ``properties.py``).
Ids are the stable keys (WordNet ids, Open Images MIDs, user tags); names are for
people and may change, and each tag may list synonyms ("alsatian" for "German
shepherd") that search matches too. Arrays are ``.npy`` files (no pickle); names are JSON.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .properties import SIGNALS as PROPERTY_SIGNALS

LABELS_FILE = "labels.json"
EMBEDDINGS_FILE = "label_embeddings.npy"
BIAS_FILE = "label_bias.npy"
HEAD_WEIGHTS_FILE, HEAD_BIAS_FILE = "scene_head_weights.npy", "scene_head_bias.npy"
#: Files a table has only when it needs them (the bundle lists whichever it has).
OPTIONAL_FILES = (BIAS_FILE, HEAD_WEIGHTS_FILE, HEAD_BIAS_FILE)
PEOPLE_SIGNALS = ("person", "portrait", "group")
SCENE_BREADTH = 10  # classes a scene word counts as, for the order of tags (see coverage)


@dataclass(frozen=True)
class PeopleTag:
    """A tag scored from faces: ``signal`` is one of PEOPLE_SIGNALS."""

    id: str
    name: str
    signal: str
    members: tuple[int, ...] = ()
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class SceneTag:
    """A tag only the scene head scores, or (``signal``, one of ``properties.SIGNALS``) a photo
    property scored from that signal; ``parent``: the id of the scene tag above it ("beach"
    under "coast" under "landscape"), or ""."""

    id: str
    name: str
    parent: str = ""
    synonyms: tuple[str, ...] = ()
    signal: str = ""


@dataclass
class LabelTable:
    """Tags of a bundle.

    Attributes:
        class_ids, class_names: one per embedding row.
        embeddings: float32 (n_classes, D).
        bias: float32 (n_classes,) or None.
        broader_ids, broader_names: the broader tags.
        broader_members: for each broader tag, the indices of the classes under it.
        class_synonyms, broader_synonyms: other words for each tag (may be empty).
        people: the tags scored from faces (empty for bundles without a face detector).
        scenes: the tags only the scene head scores, and photo properties (``signal`` set).
        head_ids: the tag each row of the scene head scores (a scene tag or any other).
        head_weights, head_bias: float32 (len(head_ids), D) and (len(head_ids),), or None.
    """

    class_ids: list[str]
    class_names: list[str]
    embeddings: np.ndarray
    bias: np.ndarray | None = None
    broader_ids: list[str] = field(default_factory=list)
    broader_names: list[str] = field(default_factory=list)
    broader_members: list[list[int]] = field(default_factory=list)
    class_synonyms: list[list[str]] = field(default_factory=list)
    broader_synonyms: list[list[str]] = field(default_factory=list)
    people: list[PeopleTag] = field(default_factory=list)
    scenes: list[SceneTag] = field(default_factory=list)
    head_ids: list[str] = field(default_factory=list)
    head_weights: np.ndarray | None = None
    head_bias: np.ndarray | None = None

    def __post_init__(self):
        self.class_synonyms = list(self.class_synonyms) or [[] for _ in self.class_ids]
        self.broader_synonyms = list(self.broader_synonyms) or [[] for _ in self.broader_ids]
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        if self.bias is not None:
            self.bias = np.asarray(self.bias, dtype=np.float32)
        self.people, self.scenes, self.head_ids = list(self.people), list(self.scenes), list(self.head_ids)
        if self.head_ids:
            self.head_weights = np.asarray(self.head_weights, dtype=np.float32)
            self.head_bias = np.asarray(self.head_bias, dtype=np.float32)
        self.ids = list(self.class_ids) + list(self.broader_ids) + [t.id for t in self.people] + [t.id for t in self.scenes]
        self.validate()
        self.names = (list(self.class_names) + list(self.broader_names) + [t.name for t in self.people]
                      + [t.name for t in self.scenes])
        self.synonyms = ([list(words) for words in self.class_synonyms] + [list(words) for words in self.broader_synonyms]
                         + [list(t.synonyms) for t in self.people] + [list(t.synonyms) for t in self.scenes])
        position = {tag_id: index for index, tag_id in enumerate(self.ids)}
        self.head_targets = np.array([position[tag_id] for tag_id in self.head_ids], dtype=np.int64)
        self._by_word: dict[str, list[int]] | None = None
        self.is_broader = np.zeros(len(self.ids), dtype=bool)
        self.is_broader[self.n_classes : self.n_classes + len(self.broader_ids)] = True
        scene_below = {t.id: 1 for t in self.scenes}  # how many scene tags each one stands for, itself included
        for tag in self.scenes:
            above, seen = tag.parent, set()
            while above and above not in seen:
                seen.add(above)
                scene_below[above] = scene_below.get(above, 1) + 1
                above = next((t.parent for t in self.scenes if t.id == above), "")
        first_scene = len(self.ids) - len(self.scenes)
        for offset, tag in enumerate(self.scenes):
            self.is_broader[first_scene + offset] = scene_below[tag.id] > 1
        # Dense 0/1 matrix: broader scores are one matmul (1000 x 338 is 1.3 MB).
        self.membership = np.zeros((self.n_classes, len(self.broader_ids)), dtype=np.float32)
        for column, members in enumerate(self.broader_members):
            self.membership[members, column] = 1.0
        self.people_membership = np.zeros((self.n_classes, len(self.people)), dtype=np.float32)
        for column, tag in enumerate(self.people):
            self.people_membership[list(tag.members), column] = 1.0
        # How many classes a tag stands for (a people tag says as much as a class).
        # A scene word is about as broad as a tag over ten classes ("sky" is not as specific as
        # "golden retriever"), and broader again for each scene word under it ("landscape").
        self.coverage = np.concatenate([np.ones(self.n_classes), self.membership.sum(axis=0), np.ones(len(self.people)),
                                        [SCENE_BREADTH * scene_below[t.id] for t in self.scenes]]).astype(np.float32)

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def validate(self) -> None:
        problems = []
        n = len(self.class_ids)
        if n == 0:
            problems.append("the table has no classes")
        if len(self.class_names) != n:
            problems.append(f"{len(self.class_names)} class names for {n} class ids")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            problems.append(f"embeddings have shape {self.embeddings.shape}, expected ({n}, D)")
        elif not np.all(np.isfinite(self.embeddings)):
            problems.append("embeddings contain NaN or infinity")
        if self.bias is not None and self.bias.shape != (n,):
            problems.append(f"bias has shape {self.bias.shape}, expected ({n},)")
        if not (len(self.broader_ids) == len(self.broader_names) == len(self.broader_members)):
            problems.append("broader ids, names and members differ in length")
        if len(self.class_synonyms) != n or len(self.broader_synonyms) != len(self.broader_ids):
            problems.append("synonym lists and tags differ in number")
        for tag, members in zip(self.broader_ids, self.broader_members):
            if not members or min(members) < 0 or max(members) >= n:
                problems.append(f"broader tag {tag!r} has members outside 0..{n - 1} or none")
                break
        for tag in self.people:
            if tag.signal not in PEOPLE_SIGNALS:
                problems.append(f"people tag {tag.id!r} has signal {tag.signal!r}, not one of {PEOPLE_SIGNALS}")
            if tag.members and (min(tag.members) < 0 or max(tag.members) >= n):
                problems.append(f"people tag {tag.id!r} has members outside 0..{n - 1}")
        all_ids = self.ids
        if len(set(all_ids)) != len(all_ids):
            duplicates = sorted({i for i in all_ids if all_ids.count(i) > 1})
            problems.append(f"duplicate tag ids: {duplicates[:5]}")
        for tag in self.scenes:
            if tag.parent and (tag.parent not in all_ids or tag.parent == tag.id):
                problems.append(f"scene tag {tag.id!r} has parent {tag.parent!r}, which is not another tag")
        if set(self.head_ids) - set(all_ids) or len(set(self.head_ids)) != len(self.head_ids):
            problems.append("the scene head scores unknown tags, or one tag twice")
        unscored = {t.id for t in self.scenes if not t.signal} - set(self.head_ids)
        if unscored:
            problems.append(f"scene tags the head does not score: {sorted(unscored)[:5]}")
        measured = {t.id for t in self.scenes if t.signal}
        for tag in self.scenes:
            if tag.signal and tag.signal not in PROPERTY_SIGNALS:
                problems.append(f"scene tag {tag.id!r}: signal {tag.signal!r} is not one of {PROPERTY_SIGNALS}")
            if tag.signal and tag.id in self.head_ids:
                problems.append(f"scene tag {tag.id!r} is a photo property and the scene head scores it too")
            if measured and (tag.id in measured or tag.parent in measured) and tag.parent:
                # a measured tag scores independently of any other: it cannot stand above or below one
                problems.append(f"scene tag {tag.id!r}: a photo property has no parent and is no parent")
        if self.head_ids:
            if self.head_weights.shape != (len(self.head_ids), self.embeddings.shape[-1]):
                problems.append(f"scene head weights have shape {self.head_weights.shape}, expected "
                                f"({len(self.head_ids)}, {self.embeddings.shape[-1]})")
            if self.head_bias.shape != (len(self.head_ids),):
                problems.append(f"scene head bias has shape {self.head_bias.shape}, expected ({len(self.head_ids)},)")
            if not (np.all(np.isfinite(self.head_weights)) and np.all(np.isfinite(self.head_bias))):
                problems.append("scene head weights contain NaN or infinity")
        if problems:
            raise ValueError("invalid label table: " + "; ".join(problems))

    @property
    def property_signals(self) -> tuple[str, ...]:
        """The photo-property signals its tags are scored from, in ``properties.SIGNALS`` order:
        what an embedding carries after the face signals."""
        used = {t.signal for t in self.scenes if t.signal}
        return tuple(s for s in PROPERTY_SIGNALS if s in used)

    def without_scene_head(self) -> "LabelTable":
        """The same table without its scene head and the scene tags only it scores (to fit a new
        head on it); photo properties stay, since they are measured, not fitted."""
        return dataclasses.replace(self, scenes=[t for t in self.scenes if t.signal], head_ids=[], head_weights=None,
                                   head_bias=None)

    def broader_chain(self, tag_id: str) -> list[str]:
        """Names of the tags above ``tag_id``, widest first (for hierarchical keywords such as
        "animal|mammal|dog"): the broader tags whose members include all of its classes. A
        people tag ("portrait", "group of people") sits under the "person" tags."""
        index = self.ids.index(tag_id)
        scenes = {t.id: t for t in self.scenes}
        if tag_id in scenes:  # its scene parents, then whatever stands above the first tag of another sort
            chain, above = [], scenes[tag_id].parent
            while above in scenes and above not in chain:
                chain.insert(0, above)
                above = scenes[above].parent
            names = [scenes[a].name for a in chain]
            return self.broader_chain(above) + [self.names[self.ids.index(above)]] + names if above else names
        if index >= self.n_classes + len(self.broader_ids):  # a people tag
            return [t.name for t in self.people if t.signal == "person" and t.id != tag_id]
        members = {index} if index < self.n_classes else set(self.broader_members[index - self.n_classes])
        above = [(len(m), name) for name, m, other in zip(self.broader_names, self.broader_members, self.broader_ids)
                 if other != tag_id and members <= set(m)]
        return [name for _, name in sorted(above, key=lambda item: -item[0])]

    def words(self) -> list[tuple[str, int]]:
        """Every (word, tag index) search answers to: names, names without their sense
        note ("car" for "car (auto)"), synonyms and ids, in lower case."""
        pairs = []
        for index, (tag_id, name, synonyms) in enumerate(zip(self.ids, self.names, self.synonyms)):
            for word in {tag_id, name, bare_name(name), *synonyms}:
                pairs.append((normalise_word(word), index))
        return sorted(set(pairs))

    def lookup(self, word: str) -> list[int]:
        """Indices of the tags a person means by ``word`` (a name, a bare name, a synonym or
        an id; a plural such as "cars" is tried as "car" when nothing else matches)."""
        if self._by_word is None:
            self._by_word = {}
            for key, index in self.words():
                self._by_word.setdefault(key, []).append(index)
        return find_word(word, self._by_word.get)

    def save(self, folder: str | Path, embeddings_dtype=np.float16) -> list[str]:
        """Write the table into ``folder``; returns the file names written."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        def entry(tag_id, name, synonyms, **more):
            return {"id": tag_id, "name": name, **({"synonyms": list(synonyms)} if synonyms else {}), **more}

        document = {
            "classes": [entry(*tag) for tag in zip(self.class_ids, self.class_names, self.class_synonyms)],
            "broader": [
                entry(i, n, synonyms, members=[int(m) for m in members])
                for i, n, members, synonyms in zip(self.broader_ids, self.broader_names, self.broader_members,
                                                   self.broader_synonyms)
            ],
        }
        if self.people:
            document["people"] = [entry(t.id, t.name, t.synonyms, signal=t.signal, members=list(t.members))
                                  for t in self.people]
        if self.scenes:
            document["scenes"] = [entry(t.id, t.name, t.synonyms, **({"parent": t.parent} if t.parent else {}),
                                        **({"signal": t.signal} if t.signal else {})) for t in self.scenes]
        if self.head_ids:
            document["scene_head"] = list(self.head_ids)
        (folder / LABELS_FILE).write_text(json.dumps(document, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        np.save(folder / EMBEDDINGS_FILE, self.embeddings.astype(embeddings_dtype))
        written = [LABELS_FILE, EMBEDDINGS_FILE]
        if self.bias is not None:
            np.save(folder / BIAS_FILE, self.bias.astype(np.float32))
            written.append(BIAS_FILE)
        if self.head_ids:
            np.save(folder / HEAD_WEIGHTS_FILE, self.head_weights.astype(embeddings_dtype))
            np.save(folder / HEAD_BIAS_FILE, self.head_bias.astype(np.float32))
            written += [HEAD_WEIGHTS_FILE, HEAD_BIAS_FILE]
        return written

    @classmethod
    def load(cls, folder: str | Path) -> "LabelTable":
        folder = Path(folder)
        try:
            document = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
            classes = document["classes"]
            broader = document.get("broader", [])
            embeddings = np.load(folder / EMBEDDINGS_FILE, allow_pickle=False)
            bias_path = folder / BIAS_FILE
            bias = np.load(bias_path, allow_pickle=False) if bias_path.exists() else None
            head_ids = [str(i) for i in document.get("scene_head", [])]
            head = [np.load(folder / name, allow_pickle=False) for name in (HEAD_WEIGHTS_FILE, HEAD_BIAS_FILE)] \
                if head_ids else [None, None]
            return cls(
                class_ids=[str(c["id"]) for c in classes],
                class_names=[str(c["name"]) for c in classes],
                embeddings=embeddings,
                bias=bias,
                broader_ids=[str(b["id"]) for b in broader],
                broader_names=[str(b["name"]) for b in broader],
                broader_members=[list(map(int, b["members"])) for b in broader],
                class_synonyms=[[str(w) for w in c.get("synonyms", [])] for c in classes],
                broader_synonyms=[[str(w) for w in b.get("synonyms", [])] for b in broader],
                people=[PeopleTag(str(t["id"]), str(t["name"]), str(t["signal"]), tuple(map(int, t.get("members", []))),
                                  tuple(map(str, t.get("synonyms", [])))) for t in document.get("people", [])],
                scenes=[SceneTag(str(t["id"]), str(t["name"]), str(t.get("parent", "")),
                                 tuple(map(str, t.get("synonyms", []))), str(t.get("signal", "")))
                        for t in document.get("scenes", [])],
                head_ids=head_ids, head_weights=head[0], head_bias=head[1],
            )
        except FileNotFoundError as exc:
            raise ValueError(f"label table in {folder}: missing file {Path(exc.filename).name}") from None
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"label table in {folder}: malformed {LABELS_FILE} ({exc!r})") from None


def read_person_row(folder: str | Path) -> tuple[np.ndarray, float] | None:
    """The scene head's row for the people tag scored from the best face ("person"): its weights
    and bias, or None when the head does not score it. Read without the rest of the table: the
    image side needs only this row, to decide whether to look for faces (``faces.PersonGate``)."""
    folder = Path(folder)
    try:
        document = json.loads((folder / LABELS_FILE).read_text(encoding="utf-8"))
        head_ids = [str(i) for i in document.get("scene_head", [])]
        person = [str(t["id"]) for t in document.get("people", []) if t.get("signal") == "person"]
        rows = [head_ids.index(i) for i in person if i in head_ids]
        if not rows:
            return None
        weights, bias = (np.load(folder / name, allow_pickle=False) for name in (HEAD_WEIGHTS_FILE, HEAD_BIAS_FILE))
        if weights.ndim != 2 or len(weights) != len(head_ids) or bias.shape != (len(head_ids),):
            raise ValueError(f"label table in {folder}: the scene head has {weights.shape} weights and "
                             f"{bias.shape} biases for {len(head_ids)} tags")
        row, offset = np.asarray(weights[rows[0]], np.float32), float(bias[rows[0]])
        if not (np.all(np.isfinite(row)) and np.isfinite(offset)):
            raise ValueError(f"label table in {folder}: the scene head's \"person\" row holds NaN or infinity")
        return row, offset
    except FileNotFoundError as exc:
        raise ValueError(f"label table in {folder}: missing file {Path(exc.filename).name}") from None
    except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as exc:
        raise ValueError(f"label table in {folder}: malformed {LABELS_FILE} ({exc!r})") from None


def bare_name(name: str) -> str:
    """A display name without its sense note: "car (auto)" -> "car"."""
    return re.sub(r" \([^)]*\)$", "", name)


def normalise_word(word: str) -> str:
    """Lower case, single spaces, no surrounding blanks: how words are compared."""
    return " ".join(word.lower().split())


def find_word(word: str, lookup) -> list[int]:
    """``lookup(key)`` for the normalised word, then for its singular ("cars", "boxes", "berries")."""
    key = normalise_word(word)
    candidates = [key]
    if key.endswith("ies"):
        candidates.append(key[:-3] + "y")
    if key.endswith("es"):
        candidates.append(key[:-2])
    if key.endswith("s"):
        candidates.append(key[:-1])
    for candidate in candidates:
        found = lookup(candidate)
        if found:
            return sorted(found)
    return []
