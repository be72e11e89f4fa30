"""Ranked tags -> an Altair horizontal bar chart (best at the top, label beside each bar)."""

from __future__ import annotations

from typing import Sequence

from .scoring import Tag


def tags_chart(tags: Sequence[Tag], title: str | None = None):
    """A bar chart of ``tags`` in their ranked order; broader tags in a lighter colour."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame({
        "rank": range(1, len(tags) + 1),
        "label": [t.label for t in tags],
        "score": [t.score for t in tags],
        "kind": ["broader" if t.broader else "specific" for t in tags],
    })
    order = list(frame["label"])
    base = alt.Chart(frame, title=title or alt.Undefined).encode(
        y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=260, labelOverlap=False)),
        x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1]), title="score"),
        tooltip=["rank", "label", alt.Tooltip("score:Q", format=".3f"), "kind"],
    )
    bars = base.mark_bar().encode(
        color=alt.Color("kind:N", scale=alt.Scale(domain=["specific", "broader"], range=["#1f77b4", "#9ecae1"]),
                        legend=alt.Legend(orient="bottom", title=None))
    )
    text = base.mark_text(align="left", dx=3).encode(text=alt.Text("score:Q", format=".2f"))
    return (bars + text).properties(height=max(60, 24 * len(tags)))
