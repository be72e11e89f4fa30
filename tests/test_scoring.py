"""The one scoring rule, checked against the formulas computed independently in the test."""

from __future__ import annotations

import numpy as np
import pytest

from image_tag_suggestion.labels import LabelTable
from image_tag_suggestion.scoring import Calibration, Scorer, ScoringRule


def table(n=6, dim=4, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    return LabelTable(
        class_ids=[f"c{i}" for i in range(n)],
        class_names=[f"class {i}" for i in range(n)],
        embeddings=rng.normal(size=(n, dim)),
        bias=rng.normal(size=n) if bias else None,
        broader_ids=["b01", "b0123"],
        broader_names=["pair", "four"],
        broader_members=[[0, 1], [0, 1, 2, 3]],
    )


def test_softmax_scores_and_broader_sums():
    labels = table()
    embedding = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    scores = Scorer(labels, ScoringRule("softmax")).scores(embedding)
    logits = embedding @ labels.embeddings.T + labels.bias
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(scores[:, :6], expected, rtol=1e-5)
    np.testing.assert_allclose(scores[:, 6], expected[:, :2].sum(1), rtol=1e-5)
    np.testing.assert_allclose(scores[:, 7], expected[:, :4].sum(1), rtol=1e-5)


def test_identity_rule_is_one_minus_quarter_squared_distance():
    labels = table(bias=False)
    embedding = np.random.default_rng(2).normal(size=4).astype(np.float32)
    scores = Scorer(labels, ScoringRule("identity", normalize=True, scale=0.5, offset=0.5)).scores(embedding)[0]
    e = embedding / np.linalg.norm(embedding)
    rows = labels.embeddings / np.linalg.norm(labels.embeddings, axis=1, keepdims=True)
    distances = np.linalg.norm(rows - e, axis=1)
    np.testing.assert_allclose(scores[:6], 1 - distances**2 / 4, atol=1e-5)


def test_sigmoid_calibration():
    labels = table(bias=False)
    embedding = np.random.default_rng(3).normal(size=4).astype(np.float32)
    scores = Scorer(labels, ScoringRule("sigmoid", normalize=True, scale=4.0, offset=-1.0)).scores(embedding)[0]
    cos = (labels.embeddings / np.linalg.norm(labels.embeddings, axis=1, keepdims=True)) @ (embedding / np.linalg.norm(embedding))
    np.testing.assert_allclose(scores[:6], 1 / (1 + np.exp(-(4 * cos - 1))), atol=1e-5)


def test_ranking_options():
    labels = table()
    scorer = Scorer(labels, ScoringRule("softmax"))
    scores = scorer.scores(np.random.default_rng(4).normal(size=4))[0]
    by_score = scorer.rank(scores, top_k=None, order="score")
    assert [t.score for t in by_score] == sorted(scores.tolist(), reverse=True)
    assert len(scorer.rank(scores, top_k=3)) == 3
    assert all(t.score >= 0.2 for t in scorer.rank(scores, top_k=None, min_score=0.2))
    assert not any(t.broader for t in scorer.rank(scores, top_k=None, include_broader=False))
    # Specific order: a broader tag's key is its score times a specificity below 1.
    specific = scorer.rank(scores, top_k=None)
    keys = [t.score * (1 - np.log(len(labels.broader_members[labels.broader_ids.index(t.id)])) / np.log(6))
            if t.broader else t.score for t in specific]
    assert keys == sorted(keys, reverse=True)
    with pytest.raises(ValueError):
        scorer.rank(scores, order="alphabetical")


def test_partial_sort_matches_full_sort_on_twenty_thousand_labels():
    rng = np.random.default_rng(5)
    labels = LabelTable([str(i) for i in range(20_000)], [str(i) for i in range(20_000)], rng.normal(size=(20_000, 50)))
    scorer = Scorer(labels, ScoringRule("identity", normalize=True, scale=0.5, offset=0.5))
    scores = scorer.scores(rng.normal(size=50))[0]
    top = scorer.rank(scores, top_k=20)
    assert [t.id for t in top] == [str(i) for i in np.argsort(-scores, kind="stable")[:20]]


def test_invalid_tables_are_refused():
    with pytest.raises(ValueError, match="class names"):
        LabelTable(["a", "b"], ["a"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="members outside"):
        LabelTable(["a"], ["a"], np.zeros((1, 3)), broader_ids=["x"], broader_names=["x"], broader_members=[[3]])
    with pytest.raises(ValueError, match="duplicate"):
        LabelTable(["a", "a"], ["a", "b"], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        LabelTable(["a"], ["a"], np.full((1, 3), np.nan))


def logistic(x):
    return 1 / (1 + np.exp(-x))


def test_calibration_is_a_logistic_of_the_logit_per_group():
    labels = table()
    rule = ScoringRule.from_config({"activation": "softmax", "calibration": {
        "specific": {"slope": 0.7, "intercept": -0.5}, "broader": {"slope": 1.2, "intercept": 0.3}}})
    embedding = np.random.default_rng(6).normal(size=(1, 4)).astype(np.float32)
    scorer = Scorer(labels, rule)
    raw, calibrated = scorer.scores(embedding, calibrated=False)[0], scorer.scores(embedding)[0]
    logit = np.log(raw / (1 - raw))
    np.testing.assert_allclose(calibrated[:6], logistic(0.7 * logit[:6] - 0.5), rtol=1e-4)
    np.testing.assert_allclose(calibrated[6:], logistic(1.2 * logit[6:] + 0.3), rtol=1e-4)
    assert ScoringRule.from_config(rule.to_config()) == rule
    with pytest.raises(ValueError, match="calibration"):
        ScoringRule.from_config({"calibration": {"specific": {"slope": "steep"}}})


def test_people_tags_follow_the_faces():
    """Signals: the three best face scores and the best face's height share (faces.py)."""
    from image_tag_suggestion.labels import PeopleTag

    labels = LabelTable(["c0", "c1", "diver"], ["c0", "c1", "diver"], np.eye(3, 4), people=[
        PeopleTag("person", "person", "person", members=(2,)), PeopleTag("portrait", "portrait", "portrait"),
        PeopleTag("group", "group of people", "group")])
    rule = ScoringRule("softmax", calibration={"faces": Calibration(2.0, -1.0)}, portrait_min_height=0.15, face_present=0.5)
    scorer = Scorer(labels, rule)
    quiet = [0.0, 0.0, 0.0, 0.0]  # the classes' logits: equal shares, 1/3 each
    signals = np.array([
        [0.9, 0.1, 0.0, 0.30],  # one large face: a portrait
        [0.9, 0.1, 0.0, 0.05],  # one small face: a person, no portrait
        [0.9, 0.8, 0.6, 0.10],  # three faces: a group
        [0.9, 0.8, 0.4, 0.30],  # two faces: neither
        [0.0, 0.0, 0.0, 0.00],  # none
    ], np.float32)
    scores = scorer.scores(np.concatenate([np.tile(quiet, (5, 1)), signals], axis=1).astype(np.float32))
    person = logistic(2.0 * np.log(0.9 / 0.1) - 1.0)
    from_classes = 1 / 3  # the diver's share is the floor of "person" (no broader calibration here)
    np.testing.assert_allclose(scores[:, 3], [person] * 4 + [from_classes], rtol=1e-4)
    np.testing.assert_allclose(scores[:, 4], [person, 0, 0, 0, 0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(scores[:, 5], [0, 0, person, 0, 0], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="values"):
        scorer.scores(np.zeros((1, 4), np.float32))  # the face signals are missing
