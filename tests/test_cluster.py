"""Campaigns: connected components over unshielded shared values."""

from __future__ import annotations

import random

import numpy as np
from helpers_campaign import frame, row

from triage.cluster import campaigns, components
from triage.features import add_features
from triage.shield import build_shield


def _noise(n: int, seed: int = 7) -> list[dict[str, object]]:
    rnd = random.Random(seed)
    return [row("spam", rnd.randrange(14), f"203.0.113.{i % 250 + 1}", None,
                f"host{i}.example{i}.net", f"u{i}@sender{i}.example") for i in range(n)]


def test_planted_campaign_recovered_from_noise() -> None:
    planted = [row("spam", d % 10, f"198.51.100.{10 + d % 6}",
                   f"{10 + d % 6}.dsl.example.net", f"pc{d}.example.net",
                   f"offer{d}@deals.example") for d in range(20)]
    df = add_features(frame(_noise(200) + planted))
    labels, table = campaigns(df, build_shield(frame([]), builtin=True))
    plant_labels = set(labels.iloc[200:])
    assert len(plant_labels) == 1, "the planted messages form one campaign"
    camp = plant_labels.pop()
    assert (labels == camp).sum() == 20, "and nothing else joins it"
    top = table.set_index("campaign").loc[camp]
    assert top["messages"] == 20 and top["days"] == 10
    assert any(t.startswith("sender_domain=deals.example") for t in top["ties"])


def test_shielded_value_does_not_tie() -> None:
    # Two unrelated spam runs through one list server that also brings ham.
    spam = frame([row("spam", 1, "192.0.2.5", "lists.example.org", "lists.example.org",
                      f"a{i}@one.example") for i in range(3)]
                 + [row("spam", 2, "192.0.2.5", "lists.example.org", "lists.example.org",
                        f"b{i}@two.example") for i in range(3)])
    ham = frame([row("ham", 0, "192.0.2.5", "lists.example.org", "lists.example.org",
                     "list@example.org")])
    labels, _ = campaigns(add_features(spam), build_shield(ham))
    assert labels.iloc[0] != labels.iloc[3]
    assert labels.iloc[:3].nunique() == 1 and labels.iloc[3:].nunique() == 1


def test_deterministic_numbering() -> None:
    df = add_features(frame(_noise(50)))
    a, _ = campaigns(df, build_shield(frame([])))
    b, _ = campaigns(df, build_shield(frame([])))
    assert a.tolist() == b.tolist()


def _bfs_components(size: int, edges: list[tuple[int, int]]) -> list[int]:
    """Per node, the smallest node of its component (breadth-first search)."""
    nbrs: dict[int, list[int]] = {i: [] for i in range(size)}
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    label = [-1] * size
    for start in range(size):
        if label[start] >= 0:
            continue
        label[start], todo = start, [start]
        while todo:
            for n in nbrs[todo.pop()]:
                if label[n] < 0:
                    label[n] = start
                    todo.append(n)
    return label


def test_components_agree_with_breadth_first_search() -> None:
    rng = np.random.default_rng(11)
    for _ in range(200):
        size = int(rng.integers(1, 120))
        m = int(rng.integers(0, 160))
        a, b = rng.integers(0, size, m), rng.integers(0, size, m)
        got = components(size, a, b).tolist()
        assert got == _bfs_components(size, list(zip(a.tolist(), b.tolist(), strict=True)))
    # a long chain in shuffled order: many rounds of hooking
    order = rng.permutation(5000)
    assert (components(5000, order[:-1], order[1:]) == 0).all()
