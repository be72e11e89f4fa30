"""Ranked tags -> an Altair horizontal bar chart: the likely tags first, a line, then the
less likely ones in grey (the seed's top-20 chart, with the cut-off drawn into it)."""

from __future__ import annotations

from typing import Sequence

from .scoring import Tag


def chart_order(tags: Sequence[Tag], min_score: float) -> list[Tag]:
    """The likely tags (score >= ``min_score``) in their ranked order, then the others."""
    return [t for t in tags if t.score >= min_score] + [t for t in tags if t.score < min_score]


def tags_chart(tags: Sequence[Tag], min_score: float = 0.0, title: str | None = None):
    """A bar chart of ``tags``; broader tags in a lighter colour, tags under ``min_score``
    grey below a line that says so."""
    import altair as alt
    import pandas as pd

    tags = chart_order(tags, min_score)
    frame = pd.DataFrame({
        "rank": range(1, len(tags) + 1),
        "label": [t.label for t in tags],
        "score": [t.score for t in tags],
        "kind": ["less likely" if t.score < min_score else "broader" if t.broader else "specific" for t in tags],
        "likely": ["likely" if t.score >= min_score else "less likely" for t in tags],
    })
    order = list(frame["label"])
    base = alt.Chart(frame, title=title or alt.Undefined).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
        x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1]), title="probability that the tag is right"),
        tooltip=["rank", "label", alt.Tooltip("score:Q", format=".3f"), "kind", "likely"],
    )
    fade = alt.Opacity("likely:N", scale=alt.Scale(domain=["likely", "less likely"], range=[1.0, 0.45]), legend=None)
    bars = base.mark_bar().encode(
        color=alt.Color("kind:N", scale=alt.Scale(domain=["specific", "broader", "less likely"],
                                                  range=["#1f77b4", "#9ecae1", "#d3d3d3"]),
                        legend=alt.Legend(orient="bottom", title=None)),
    )
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("score:Q", format=".2f"), opacity=fade)
    layers = [bars, text]
    below = [t.label for t in tags if t.score < min_score]
    if below:  # the line between the last likely tag and the first less likely one
        line = pd.DataFrame({"label": [below[0]], "x": [1.0], "note": [f"below {min_score:.2f}: less likely"]})
        rule = alt.Chart(line).encode(y=alt.Y("label:N", sort=order, bandPosition=0))
        layers += [rule.mark_rule(color="#d62728", strokeDash=[4, 3]),
                   rule.mark_text(align="right", baseline="top", dy=2, color="#d62728", fontSize=10)
                       .encode(x=alt.X("x:Q", scale=alt.Scale(domain=[0, 1])), text="note:N")]
    return alt.layer(*layers).properties(height=max(60, 24 * len(tags)))
