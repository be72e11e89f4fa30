"""The labelled dev sets' tables and the quality benchmarks' judge (benchmarks/), which the
README's quality figures rest on."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import devset  # noqa: E402
import scene_quality  # noqa: E402
import scenes_devset  # noqa: E402
import tag_quality  # noqa: E402


@pytest.fixture(scope="module")
def vocabulary():
    return devset.Vocabulary()


@pytest.fixture(scope="module")
def photos(vocabulary):
    return {p.photo: p for p in devset.label(devset.read_labels(), vocabulary)}


def test_every_row_names_real_wordnet_senses_and_the_split_is_fixed(photos):
    assert len(photos) >= 300
    splits = [p.split for p in photos.values()]
    assert 0.3 < splits.count("held-out") / len(splits) < 0.5
    assert all(devset.split_of(key) == p.split for key, p in photos.items())
    assert sum(bool(p.people) for p in photos.values()) >= 20
    crow = photos["tuxpaint:animals/birds/crow.png"]
    assert crow.truth_names == ["crow"] and crow.entry_names == ["bird"]  # the word people type first
    assert "animal" in crow.broader


def test_the_judge(vocabulary, photos):
    judge = tag_quality.Judge(vocabulary)
    crow = photos["tuxpaint:animals/birds/crow.png"]
    bird, animal, magpie = "n01503061", "n00015388", "n01582220"
    assert judge.right(bird, crow) and judge.entry_level(bird, crow)
    assert judge.right(animal, crow) and not judge.entry_level(animal, crow)  # right, but says too little
    assert not judge.right(magpie, crow)
    dog_only = photos["tuxpaint:animals/mammals/dogs/dingo.png"]  # labelled dingo and dog
    assert judge.right("n02099601", dog_only)  # a breed is finer than "dog": it cannot be told wrong
    portrait = photos["skimage:astronaut.png"]
    assert judge.right(tag_quality.PERSON_ID, portrait) and judge.right(tag_quality.PORTRAIT_ID, portrait)
    assert not judge.right(tag_quality.PEOPLE_ID, portrait)
    assert not judge.right(tag_quality.PERSON_ID, crow)


def test_a_scene_photo_is_judged_by_everything_its_labels_say(vocabulary):
    """Besides the scene words, a scene photo's labels name the sense of its entry word and the
    other things right to tag (WordNet keys, every one of them checked when the labels are read):
    an airliner at an airport is a right tag, and a dome is the roof, not the shape."""
    records = {r.photo: r for r in map(scenes_devset.record_of, scenes_devset.read_labels())}
    airport, dome = (records[k] for k in ("tlextra:latex/beamertheme-detlevcm/FS-img2.png", "backstretch:dome.jpg"))

    def wnid(key: str) -> str:
        return vocabulary.synsets[vocabulary.resolve(key)].wnid

    judge = tag_quality.Judge(vocabulary)
    judged = scene_quality.judged_photos([airport, dome], vocabulary)
    bare = scene_quality.judged_photos([dataclasses.replace(r, objects=[], entry_sense=[]) for r in (airport, dome)],
                                       vocabulary)
    airliner, vehicle, sky = wnid("airliner.n.01"), wnid("vehicle.n.01"), wnid("sky.n.01")
    assert judge.right(airliner, judged[0]) and judge.right(vehicle, judged[0]) and judge.right(sky, judged[0])
    assert not judge.right(airliner, bare[0]) and judge.right(sky, bare[0])
    assert not judge.right(wnid("dome.n.04"), judged[0])  # what one photo shows is not another's
    roof_dome, shape = wnid("dome.n.04"), wnid("dome.n.01")
    assert judge.right(roof_dome, judged[1]) and judge.entry_level(roof_dome, judged[1])
    assert not judge.right(shape, judged[1])
    assert not judge.right(roof_dome, bare[1])  # the entry's first sense, the shape, is not the roof
