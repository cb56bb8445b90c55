"""Group emails into conversations, so one angry customer is one ticket, not twelve.

Links come first (Message-ID, In-Reply-To, References, joined with union-find);
clients that drop those headers are caught by the fallback: a message whose
subject says it is a reply ("Re:", "AW:", "SV:", "Fwd:") joins the previous
message of the same sender with the same subject (prefixes and [tags] removed)
within a window. A fresh mail without a prefix opens a new conversation, as a
helpdesk would count it (measured on generated mail in tests/transforms/test_threads.py).

The thread id must be the same whichever run sees a message, because replies
arrive in later runs. It is the *root* Message-ID: the first entry of References
(RFC 5322 keeps the root there), else In-Reply-To, else the message's own id,
taken from the earliest message of the conversation. Messages the warehouse has
already threaded can be passed as ``known``: their thread ids win, so a reply
that only names its parent still joins the ticket its parent is in.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Literal

import polars as pl

from transforms.mime import has_reply_prefix, normalize_subject

__all__ = ["thread_messages"]

_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        parent = self.parent.setdefault(item, item)
        root = item
        while parent != root:
            root = parent
            parent = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_all(self, items: Iterable[str]) -> None:
        first: str | None = None
        for item in items:
            if first is None:
                first = self.find(item)
            else:
                self.union(first, item)


def _col(frame: pl.DataFrame, name: str, default: object = None) -> list:
    if name in frame.columns:
        return frame.get_column(name).to_list()
    return [default] * frame.height


def thread_messages(
    messages: pl.DataFrame,
    *,
    window: timedelta = timedelta(days=14),
    known: pl.DataFrame | None = None,
    subject_fallback: Literal["replies", "all", "off"] = "replies",
) -> pl.DataFrame:
    """Return ``messages`` with a ``thread_id`` column (String, never null).

    ``messages`` needs ``message_id`` (unique, non-null: synthesise one for mail
    that lacks it) and may have ``in_reply_to``, ``references`` (list of ids),
    ``subject``, ``from_addr`` and ``date`` (UTC datetime); missing columns
    disable the links that need them. ``known`` holds already-threaded messages
    (``message_id``, ``thread_id``, optionally ``subject``, ``from_addr``,
    ``date``); they join by links and by the subject fallback like the new ones,
    and a conversation touching one takes its thread id.

    ``subject_fallback`` says which unlinked messages may join by subject:
    ``"replies"`` (default) only those whose subject claims to be a reply or
    forward ("Re:", "AW:", "Fwd:"...) — the way helpdesks thread, so a
    customer's fresh mail on the same subject is a new ticket there and here;
    ``"all"`` any; ``"off"`` none. The window is measured from the previous
    message of the same sender and subject, so a slow conversation stays one.
    """
    if messages.height == 0:
        return messages.with_columns(thread_id=pl.lit(None, dtype=pl.String))
    known = known if known is not None else pl.DataFrame()
    ids: list[str] = [*_col(messages, "message_id"), *_col(known, "message_id")]
    if any(i is None for i in ids):
        raise ValueError("thread_messages needs a message_id on every row")
    n_new = messages.height
    replies = [*_col(messages, "in_reply_to"), *[None] * known.height]
    refs = [*_col(messages, "references"), *[None] * known.height]
    subjects = [*_col(messages, "subject"), *_col(known, "subject")]
    senders = [*_col(messages, "from_addr"), *_col(known, "from_addr")]
    dates = [*_col(messages, "date"), *_col(known, "date")]
    fixed: dict[str, str] = dict(zip(ids[n_new:], _col(known, "thread_id"), strict=True))

    uf = _UnionFind()
    for i, msg_id in enumerate(ids):
        uf.find(msg_id)
        linked = [msg_id]
        if replies[i]:
            linked.append(replies[i])
        if refs[i]:
            linked.extend(r for r in refs[i] if r)
        uf.union_all(linked)

    # Subject fallback: only for messages that carry no link at all, joined to the
    # previous message of the same sender and subject if it is within the window.
    keyed = sorted(
        (
            (senders[i] or "", normalize_subject(subjects[i]), dates[i] or _FAR_FUTURE, ids[i], i)
            for i in range(len(ids))
            if senders[i] and normalize_subject(subjects[i])
        ),
    )
    if subject_fallback not in ("replies", "all", "off"):
        raise ValueError(f"subject_fallback must be replies, all or off: {subject_fallback!r}")
    for prev, cur in pairwise(keyed if subject_fallback != "off" else []):
        i = cur[4]
        same_key = prev[0] == cur[0] and prev[1] == cur[1]
        # Known messages were threaded when they were stored (their links are not
        # passed here): they may be the earlier message a reply joins, never the
        # reply, or every "Re: Refund" the team ever sent would become one thread.
        unlinked = i < n_new and not replies[i] and not refs[i]
        claims_reply = subject_fallback == "all" or has_reply_prefix(subjects[i])
        if same_key and unlinked and claims_reply and cur[2] - prev[2] <= window:
            uf.union(prev[3], cur[3])

    # The canonical id of each conversation: a known thread id if it has one, else
    # the root its earliest message claims. References[0] (or a message's own id when
    # it answers nothing) names the root; In-Reply-To names only the parent, which is
    # the root only in a two-message thread, so it is the last resort: a reply whose
    # client dropped References must not rename a thread another message roots.
    best: dict[str, tuple[int, datetime, str, str]] = {}
    for i, msg_id in enumerate(ids):
        root = uf.find(msg_id)
        if msg_id in fixed:
            candidate = (0, dates[i] or _FAR_FUTURE, fixed[msg_id], fixed[msg_id])
        elif refs[i] and refs[i][0]:
            candidate = (1, dates[i] or _FAR_FUTURE, msg_id, refs[i][0])
        elif not replies[i]:
            candidate = (1, dates[i] or _FAR_FUTURE, msg_id, msg_id)
        else:
            candidate = (2, dates[i] or _FAR_FUTURE, msg_id, replies[i])
        if root not in best or candidate < best[root]:
            best[root] = candidate
    thread_ids = [best[uf.find(msg_id)][3] for msg_id in ids[:n_new]]
    return messages.with_columns(thread_id=pl.Series(thread_ids, dtype=pl.String))
