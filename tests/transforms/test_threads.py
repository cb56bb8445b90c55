"""thread_messages: links first, subject + sender fallback, ids stable across runs."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from itertools import combinations

import polars as pl
import pytest

from transforms.threads import thread_messages

T0 = datetime(2025, 2, 1, 9, 0, tzinfo=UTC)
COLUMNS = {
    "message_id": pl.String,
    "in_reply_to": pl.String,
    "references": pl.List(pl.String),
    "subject": pl.String,
    "from_addr": pl.String,
    "date": pl.Datetime("us", "UTC"),
}


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    full = [{name: row.get(name) for name in COLUMNS} for row in rows]
    return pl.DataFrame(full, schema=COLUMNS)


def msg(
    mid: str,
    *,
    irt: str | None = None,
    refs: list[str] | None = None,
    subject: str = "Price",
    sender: str = "cust@example.com",
    hours: float = 0,
) -> dict[str, object]:
    return {
        "message_id": mid,
        "in_reply_to": irt,
        "references": refs or [],
        "subject": subject,
        "from_addr": sender,
        "date": T0 + timedelta(hours=hours),
    }


def threads_of(result: pl.DataFrame) -> dict[str, str]:
    return dict(zip(result["message_id"], result["thread_id"], strict=True))


def test_fifty_replies_form_one_thread_named_by_the_root() -> None:
    rows = [msg("root@x")]
    chain = ["root@x"]
    for i in range(50):
        sender = "agent@acme.test" if i % 2 == 0 else "cust@example.com"
        mid = f"r{i}@x"
        # Clients keep the root first and the last few ids (References get cut).
        rows.append(
            msg(
                mid,
                irt=chain[-1],
                refs=[chain[0], *chain[-3:]],
                sender=sender,
                subject="Re: Price",
                hours=i + 1,
            )
        )
        chain.append(mid)
    result = thread_messages(frame(rows))
    assert set(result["thread_id"]) == {"root@x"}
    assert result.height == 51


def test_in_reply_to_alone_links_and_unrelated_mail_stays_apart() -> None:
    result = threads_of(
        thread_messages(
            frame(
                [
                    msg("a@x"),
                    msg("b@x", irt="a@x", sender="agent@acme.test", hours=1),
                    msg("c@x", subject="Refund", sender="other@example.com", hours=2),
                ]
            )
        )
    )
    assert result["a@x"] == result["b@x"] == "a@x"
    assert result["c@x"] == "c@x"


def test_subject_fallback_needs_same_sender_and_the_window() -> None:
    rows = [
        msg("a@x", subject="Price rise"),
        msg("b@x", subject="RE: [Acme] price  rise", hours=48),  # headers dropped
        msg("c@x", subject="Re: Price rise", sender="someone@else.com", hours=49),
        msg("d@x", subject="Re: Price rise", hours=48 + 24 * 30),  # a month later: new thread
    ]
    result = threads_of(thread_messages(frame(rows), window=timedelta(days=14)))
    assert result["a@x"] == result["b@x"] == "a@x"
    assert result["c@x"] == "c@x"
    assert result["d@x"] == "d@x"
    wide = threads_of(thread_messages(frame(rows), window=timedelta(days=60)))
    assert wide["d@x"] == "a@x"


def test_fresh_mail_on_the_same_subject_is_a_new_thread_unless_asked() -> None:
    rows = [
        msg("a@x", subject="Help"),
        msg("b@x", subject="Help", hours=1),  # no reply prefix: a new conversation
        msg("c@x", irt="b@x", refs=["b@x"], subject="Re: Help", hours=2),
    ]
    default = threads_of(thread_messages(frame(rows)))
    assert default["a@x"] == "a@x"
    assert default["b@x"] == default["c@x"] == "b@x"
    merged = threads_of(thread_messages(frame(rows), subject_fallback="all"))
    assert merged["a@x"] == merged["b@x"] == merged["c@x"] == "a@x"
    off = threads_of(
        thread_messages(
            frame([msg("a@x"), msg("b@x", subject="Re: Price")]), subject_fallback="off"
        )
    )
    assert off == {"a@x": "a@x", "b@x": "b@x"}


def test_reply_in_a_later_run_gets_the_same_thread_id() -> None:
    first_run = thread_messages(
        frame(
            [
                msg("root@x"),
                msg("r1@x", irt="root@x", refs=["root@x"], sender="agent@acme.test", hours=1),
            ]
        )
    )
    later = thread_messages(
        frame([msg("r2@x", irt="r1@x", refs=["root@x", "r1@x"], subject="Re: Price", hours=30)])
    )
    assert set(first_run["thread_id"]) == set(later["thread_id"]) == {"root@x"}


def test_known_threads_win_when_the_new_reply_names_only_its_parent() -> None:
    known = pl.DataFrame({"message_id": ["r1@x"], "thread_id": ["root@x"]})
    later = thread_messages(frame([msg("r2@x", irt="r1@x", hours=30)]), known=known)
    assert later["thread_id"].to_list() == ["root@x"]
    alone = thread_messages(frame([msg("r2@x", irt="r1@x", hours=30)]))
    assert alone["thread_id"].to_list() == ["r1@x"]


def test_known_threads_join_by_subject_fallback_too() -> None:
    known = pl.DataFrame(
        {
            "message_id": ["old@x"],
            "thread_id": ["old@x"],
            "subject": ["Price"],
            "from_addr": ["cust@example.com"],
            "date": [T0],
        }
    )
    later = thread_messages(frame([msg("new@x", subject="Re: Price", hours=24)]), known=known)
    assert later["thread_id"].to_list() == ["old@x"]


def test_known_messages_of_one_sender_and_subject_stay_in_their_own_threads() -> None:
    """The team answers many "Refund" mails with "Re: Refund": stored answers never merge."""
    known = pl.DataFrame(
        {
            "message_id": ["a1@acme.test", "b1@acme.test"],
            "thread_id": ["a@x", "b@x"],
            "subject": ["Re: Refund", "Re: Refund"],
            "from_addr": ["support@acme.test", "support@acme.test"],
            "date": [T0, T0 + timedelta(hours=5)],
        }
    )
    later = thread_messages(
        frame([msg("b2@x", irt="b1@acme.test", subject="Re: Refund", hours=30)]), known=known
    )
    assert later["thread_id"].to_list() == ["b@x"]


def test_references_name_the_root_even_when_an_earlier_reply_lost_them() -> None:
    """A batch holding only the later part of a thread: In-Reply-To is just the parent."""
    later = thread_messages(
        frame(
            [
                msg("c2@x", irt="a1@acme.test", subject="Re: Price", hours=30),
                msg(
                    "a3@acme.test",
                    irt="c2@x",
                    refs=["root@x", "a1@acme.test", "c2@x"],
                    sender="agent@acme.test",
                    hours=40,
                ),
            ]
        )
    )
    assert set(later["thread_id"]) == {"root@x"}


def test_order_of_rows_does_not_change_thread_ids() -> None:
    rows = [
        msg("a@x"),
        msg("b@x", irt="a@x", refs=["a@x"], hours=1),
        msg("c@x", irt="b@x", refs=["a@x", "b@x"], hours=2),
        msg("z@x", subject="Other", hours=3),
    ]
    forward = threads_of(thread_messages(frame(rows)))
    backward = threads_of(thread_messages(frame(rows[::-1])))
    assert forward == backward


def test_empty_and_missing_ids() -> None:
    empty = thread_messages(frame([]))
    assert "thread_id" in empty.columns
    assert empty.height == 0
    with pytest.raises(ValueError, match="message_id"):
        thread_messages(frame([{"message_id": None, "subject": "x"}]))


# --------------------------------------------------------------------------- accuracy


def generated_mailbox(seed: int, conversations: int = 400) -> tuple[pl.DataFrame, dict[str, int]]:
    """Conversations with known ground truth, the way real inboxes mangle them.

    About 15% of customer replies lost In-Reply-To and References (webmail,
    phones), a tenth of those lost "Re:" too, customers reuse common subjects,
    and every root is a new conversation, as a helpdesk would count it.
    """
    rng = random.Random(seed)
    subjects = [
        "Price increase",
        "Cancel my subscription",
        "Refund",
        "Invoice question",
        "Dark mode removed",
        "Service split",
        "Login problem",
        "Help",
    ]
    customers = [f"c{i}@example.com" for i in range(conversations // 3)]
    rows: list[dict[str, object]] = []
    truth: dict[str, int] = {}
    for conv in range(conversations):
        sender = rng.choice(customers)
        subject = rng.choice(subjects) + ("" if rng.random() < 0.6 else f" #{conv}")
        start = rng.uniform(0, 24 * 120)
        root = f"conv{conv}-0@example.com"
        chain = [root]
        rows.append(msg(root, subject=subject, sender=sender, hours=start))
        truth[root] = conv
        when = start
        for k in range(1, rng.randint(1, 8)):
            when += rng.uniform(0.2, 48)
            who = "support@acme.test" if k % 2 else sender
            mid = f"conv{conv}-{k}@example.com"
            linked = rng.random() > 0.15 or who != sender  # agents' helpdesk keeps headers
            # A few clients lose the "Re:" as well as the headers.
            prefix = (
                "" if not linked and rng.random() < 0.1 else rng.choice(["Re: ", "RE: ", "AW: "])
            )
            rows.append(
                msg(
                    mid,
                    irt=chain[-1] if linked else None,
                    refs=[chain[0], *chain[-2:]] if linked else [],
                    subject=f"{prefix}{subject}",
                    sender=who,
                    hours=when,
                )
            )
            chain.append(mid)
            truth[mid] = conv
    return frame(rows), truth


def pair_scores(pred: dict[str, str], truth: dict[str, int]) -> tuple[float, float, float]:
    def pairs(groups: dict[str, object]) -> set[tuple[str, str]]:
        members: dict[object, list[str]] = defaultdict(list)
        for mid, gid in groups.items():
            members[gid].append(mid)
        return {tuple(sorted(p)) for ms in members.values() for p in combinations(ms, 2)}

    predicted, actual = pairs(pred), pairs(truth)  # type: ignore[arg-type]
    hit = len(predicted & actual)
    precision = hit / len(predicted) if predicted else 1.0
    recall = hit / len(actual) if actual else 1.0
    return precision, recall, 2 * precision * recall / (precision + recall)


def exact_threads(pred: dict[str, str], truth: dict[str, int]) -> float:
    by_truth: dict[int, set[str]] = defaultdict(set)
    by_pred: dict[str, set[str]] = defaultdict(set)
    for mid, conv in truth.items():
        by_truth[conv].add(mid)
        by_pred[pred[mid]].add(mid)
    predicted_sets = {frozenset(s) for s in by_pred.values()}
    return sum(frozenset(s) in predicted_sets for s in by_truth.values()) / len(by_truth)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_threading_accuracy_on_generated_mailbox(seed: int) -> None:
    messages, truth = generated_mailbox(seed)
    scores = {}
    for mode in ("replies", "all", "off"):
        pred = threads_of(thread_messages(messages, subject_fallback=mode))  # type: ignore[arg-type]
        scores[mode] = (*pair_scores(pred, truth), exact_threads(pred, truth))
        print(
            f"seed={seed} messages={messages.height} threads={len(set(truth.values()))} "
            f"fallback={mode}: pairwise P={scores[mode][0]:.3f} R={scores[mode][1]:.3f} "
            f"F1={scores[mode][2]:.3f} exact-threads={scores[mode][3]:.3f}"
        )
    precision, recall, _, exact = scores["replies"]
    assert precision >= 0.98
    assert recall >= 0.97
    assert exact >= 0.95
    # The fallback earns its place, and the default beats merging every same subject.
    assert scores["off"][1] < recall
    assert scores["all"][0] < precision
