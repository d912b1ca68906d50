"""Campaigns: spam messages grouped by the feature values they share.

Messages and feature values form a bipartite graph (an edge when a message has a value);
a campaign is a connected component of it. Only values the shield does not contain are
edges, so a spam run through a mailing list that also brings ham is not glued to other spam
by the list server's address. The result is deterministic: campaigns are numbered by size
(largest first), ties broken by their first message's position.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from triage.shield import Shield

__all__ = ["LINK_FEATURES", "campaigns", "components", "link_values"]

# Feature columns that tie messages together, and the shield set each is checked against.
LINK_FEATURES: dict[str, str] = {
    "client_ip": "ham_ips",
    "net": "networks",
    "client_name": "ham_names",
    "helo": "ham_helos",
    "sender_domain": "domains",
    "from_domain": "domains",
}
# HELO shapes too common and too generic to tie two messages into one campaign.
_WEAK_HELO = {"none", "address_literal", "bare_ip"}


def link_values(spam: pd.DataFrame, shield: Shield) -> pd.DataFrame:
    """Long table (``row``, ``feature``, ``value``) of the values that may tie messages:
    non-null, not shielded, not an allowlisted provider domain."""
    parts = []
    rows = np.arange(len(spam))
    for feat, shield_attr in LINK_FEATURES.items():
        if feat not in spam:
            continue
        vals = spam[feat].astype(object)
        keep = vals.notna().to_numpy().copy()
        blocked = getattr(shield, shield_attr)
        keep &= ~vals.isin(blocked).to_numpy()
        if feat in ("sender_domain", "from_domain"):
            keep &= ~vals.isin(shield.allowlist.domains.keys()).to_numpy()
        if feat == "client_name" and "rdns_domain" in spam:
            keep &= ~spam["rdns_domain"].isin(shield.allowlist.rdns.keys()).to_numpy()
        if feat == "helo" and "helo_shape" in spam:
            keep &= ~spam["helo_shape"].isin(_WEAK_HELO).to_numpy()
        parts.append(pd.DataFrame({"row": rows[keep], "feature": feat,
                                   "value": vals.to_numpy()[keep]}))
    if not parts:
        return pd.DataFrame({"row": pd.Series(dtype=int), "feature": pd.Series(dtype=object),
                             "value": pd.Series(dtype=object)})
    return pd.concat(parts, ignore_index=True)


def components(size: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the undirected graph on nodes ``0 .. size-1`` with the edges
    (``a[i]``, ``b[i]``): per node, the smallest node of its component.

    Vectorised union-find: each round hooks every root that an edge joins to a smaller
    root onto the smallest such root, then points every node straight at its root; the
    rounds end when no edge joins two roots (a handful for campaign graphs).

    >>> components(5, np.array([0, 3]), np.array([2, 2])).tolist()
    [0, 1, 0, 0, 4]
    """
    root = np.arange(size, dtype=np.int64)
    while True:
        ra, rb = root[a], root[b]
        join = ra != rb
        if not join.any():
            return root
        np.minimum.at(root, np.maximum(ra[join], rb[join]), np.minimum(ra[join], rb[join]))
        while True:
            up = root[root]
            if np.array_equal(up, root):
                break
            root = up


def campaigns(spam: pd.DataFrame, shield: Shield, max_ties: int = 5
              ) -> tuple[pd.Series, pd.DataFrame]:
    """Group spam (``features.add_features`` output) into campaigns.

    Returns ``(labels, table)``: ``labels`` is a Series aligned with ``spam`` holding the
    campaign id (``C001`` ...); ``table`` has one row per campaign: ``campaign``,
    ``messages``, ``days``, ``first_seen``, ``last_seen`` and ``ties``, the shared values
    that hold it together as ``feature=value (count)``, most shared first.
    A message with no unshielded value is a campaign of its own.
    """
    n = len(spam)
    links = link_values(spam, shield)
    token = links["feature"].astype(str) + "=" + links["value"].astype(str)
    codes, uniq = pd.factorize(token)
    comp = components(n + len(uniq), links["row"].to_numpy(dtype=np.int64),
                      n + codes.astype(np.int64))
    msg_comp = comp[:n]
    # Renumber: largest first, then by first row, so the ids do not depend on the labels.
    sizes = np.bincount(msg_comp, minlength=comp.max() + 1 if n else 0)
    first = np.full(len(sizes), n, dtype=np.int64)
    np.minimum.at(first, msg_comp, np.arange(n))
    order = sorted(set(msg_comp.tolist()), key=lambda c: (-sizes[c], first[c]))
    width = max(3, len(str(len(order))))
    names = {c: f"C{i + 1:0{width}d}" for i, c in enumerate(order)}
    labels = pd.Series([names[c] for c in msg_comp], index=spam.index, dtype=object)
    return labels, _campaign_table(spam, labels, links, token, max_ties)


def _campaign_table(spam: pd.DataFrame, labels: pd.Series, links: pd.DataFrame,
                    token: pd.Series, max_ties: int) -> pd.DataFrame:
    base = pd.DataFrame({"campaign": labels.to_numpy(),
                         "day": spam["day"].to_numpy() if "day" in spam else None,
                         "time": pd.to_datetime(spam["received_time"], utc=True)
                         if "received_time" in spam else pd.NaT})
    table = base.groupby("campaign", sort=True).agg(
        messages=("campaign", "size"), days=("day", "nunique"),
        first_seen=("time", "min"), last_seen=("time", "max"))
    if len(links):
        lk = pd.DataFrame({"campaign": labels.to_numpy()[links["row"].to_numpy()],
                           "token": token.to_numpy()})
        counts = lk.groupby(["campaign", "token"]).size().rename("n").reset_index()
        counts = counts[counts["n"] > 1].sort_values(["campaign", "n", "token"],
                                                     ascending=[True, False, True])
        ties = counts.groupby("campaign").head(max_ties)
        ties_text = (ties["token"] + " (" + ties["n"].astype(str) + ")").groupby(
            ties["campaign"]).agg(list)
        table["ties"] = ties_text.reindex(table.index)
    else:
        table["ties"] = None
    table["ties"] = table["ties"].map(lambda v: v if isinstance(v, list) else [])
    table = table.reset_index()
    return table.sort_values(["messages", "campaign"], ascending=[False, True],
                             ignore_index=True)
