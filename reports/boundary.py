"""Decision-boundary maps: the predicted country over the map, the test points on top.

``boundary_figure(maps, titles, title)`` draws one panel per ``decision_boundary.npz``
artifact (``longs``, ``lats``, ``grid_classes`` [lat, long], ``test_points``,
``test_labels``, ``test_predicted``). Regions and points share one 33-colour palette; the
legend names the countries and toggles a country's points in every panel.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from objectives.euro_data import COUNTRY_NAMES, NUM_CLASSES
from reports.figure import TEMPLATE

# Plotly's 26-colour "Alphabet" palette plus the 7 colours of Dark24/Light24 farthest (CIELAB)
# from it, picked greedily: 33 colours at least 24 Lab units apart.
PALETTE_33 = (
    "#AA0DFE", "#3283FE", "#85660D", "#782AB6", "#565656", "#1C8356", "#16FF32", "#F7E1A0",
    "#E2E2E2", "#1CBE4F", "#C4451C", "#DEA0FD", "#FE00FA", "#325A9B", "#FEAF16", "#F8A19F",
    "#90AD1C", "#F6222E", "#1CFFCE", "#2ED9FF", "#B10DA1", "#C075A6", "#FC1CBF", "#B00068",
    "#FBE426", "#FA0087", "#AF0038", "#620042", "#778AAE", "#6C7C32", "#DC587D", "#862A16",
    "#86CE00",
)
MAX_POINTS = 3000  # test points drawn per panel (a stratified, seeded sample)
REGION_OPACITY = 0.45


def discrete_colorscale(colors: tuple[str, ...] = PALETTE_33) -> list[list]:
    """A stepwise colour scale: class ``k`` (with zmin -0.5, zmax n-0.5) gets ``colors[k]``."""
    n = len(colors)
    scale = []
    for k, color in enumerate(colors):
        scale += [[k / n, color], [(k + 1) / n, color]]
    return scale


def sample_points(labels: np.ndarray, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Indices of a seeded sample of about ``limit`` points with every class kept."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = max(1, round(limit * len(members) / len(labels)))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))


def boundary_figure(maps: list[dict[str, np.ndarray]], titles: list[str], title: str
                    ) -> go.Figure:
    """One map panel per boundary artifact, side by side, with a shared country legend."""
    figure = make_subplots(rows=1, cols=len(maps), subplot_titles=titles,
                           horizontal_spacing=0.04)
    for col, data in enumerate(maps, start=1):
        grid = data["grid_classes"].astype(int)
        figure.add_trace(go.Heatmap(
            x=data["longs"], y=data["lats"], z=grid, zmin=-0.5, zmax=NUM_CLASSES - 0.5,
            colorscale=discrete_colorscale(), showscale=False, opacity=REGION_OPACITY,
            # class numbers, not names, in the hover: names would add 2 MB to every HTML file
            hovertemplate="long %{x:.2f}°, lat %{y:.2f}°<br>predicted class %{z} "
                          "(legend order, from 0)<extra></extra>",
            name="predicted region"), row=1, col=col)
        points, labels = data["test_points"], data["test_labels"].astype(int)
        predicted = data["test_predicted"].astype(int)
        keep = sample_points(labels)
        for cls in range(NUM_CLASSES):
            index = keep[labels[keep] == cls]
            figure.add_trace(go.Scattergl(
                x=points[index, 0], y=points[index, 1], mode="markers",
                name=COUNTRY_NAMES[cls], legendgroup=COUNTRY_NAMES[cls], showlegend=col == 1,
                marker={"color": PALETTE_33[cls], "size": 4,
                        "line": {"color": "black", "width": 0.4}},
                customdata=np.array(COUNTRY_NAMES, dtype=object)[predicted[index]],
                hovertemplate=f"{COUNTRY_NAMES[cls]}<br>predicted %{{customdata}}<extra></extra>",
            ), row=1, col=col)
        figure.update_xaxes(title_text="longitude (°E)", range=[data["longs"][0],
                                                                data["longs"][-1]],
                            row=1, col=col)
        figure.update_yaxes(title_text="latitude (°N)" if col == 1 else None,
                            range=[data["lats"][0], data["lats"][-1]], row=1, col=col)
    figure.update_layout(
        template=TEMPLATE, title={"text": title, "x": 0.01},
        legend={"title": {"text": "country (region: predicted; point: true label of a test "
                                  "point)", "side": "top"},
                "font": {"size": 10}, "itemsizing": "constant", "orientation": "h",
                "x": 0, "y": -0.1, "yanchor": "top", "entrywidth": 150},
        # panel titles of several lines (a seed's note) push the plots down, not into the title
        margin={"t": 80 + 20 * max(t.count("<br>") for t in titles), "r": 10, "b": 10})
    return figure


def accuracy_on_map(data: dict[str, np.ndarray]) -> float:
    """Test accuracy recomputed from the boundary artifact's test predictions."""
    return float((data["test_labels"] == data["test_predicted"]).mean())
