"""The demo company "Reelbox": two years of support tickets with known backlashes.

A pipeline that finds backlashes can only be shown (and tested end to end) on
data where the truth is known. Reelbox is a fictional streaming-and-DVD
subscription whose change calendar replays the well-known 2008 and 2011
stories: profiles announced to go and kept after an outcry, a ~60% price rise,
and the DVD service split off as "Qwikster" and folded back three weeks later.
Around them sit what makes detection hard in real life: weekly seasonality,
slow growth, over-dispersed noise, a holiday season in which *every* topic rises
together, harmless releases that must not be blamed, and an outage with no
change behind it.

Counts are drawn per day and topic with NumPy (vectorised, so the full demo
takes seconds); only the text is assembled in Python. Everything comes from one
``numpy.random.default_rng(seed)``, so a seed always gives byte-identical files.
:class:`DemoTruth` says what was planted, so tests can hold the pipeline to it.

Beside the helpdesk export, ``support.mbox`` is the support mailbox of the same
company: ~12% more conversations, drawn like the tickets (the backlashes show
in email too) from a second RNG stream so ``tickets.csv`` never changes with
it, played out as real mail is (agent answers, replies whose clients dropped
References or every header, "AW:", HTML-only, quoted-printable and base64 parts,
auto-acknowledgements, out-of-office replies, bounces). :class:`MailboxTruth`
knows every conversation, so threading can be scored.
"""

from __future__ import annotations

import base64
import csv
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email import quoprimime
from email.utils import format_datetime, formataddr
from html import escape as html_escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

TOPICS: tuple[str, ...] = ("pricing", "dvd", "profiles", "playback", "account", "content")
# Background complaints a day per topic at volume 1.0, at the start, on an average weekday.
COMPLAINT_RATE: dict[str, float] = {
    "pricing": 12.0,
    "dvd": 9.0,
    "profiles": 7.0,
    "playback": 14.0,
    "account": 12.0,
    "content": 9.0,
}
# Non-complaints a day (questions, requests, praise) at volume 1.0.
OTHER_RATE = 100.0
OTHER_KINDS: tuple[str, ...] = ("question", "request", "praise")
OTHER_KIND_P = np.array([0.5, 0.35, 0.15])
TOPIC_TAG: dict[str, str] = {
    "pricing": "billing",
    "dvd": "dvd",
    "profiles": "profiles",
    "playback": "playback",
    "account": "account",
    "content": "catalog",
}
# Mon .. Sun: support is busiest at the start of the week.
WEEKDAY = np.array([1.25, 1.15, 1.1, 1.05, 0.95, 0.8, 0.7])
GROWTH = 0.20  # over the whole period
DISPERSION = 100.0  # gamma shape of the day-to-day rate noise: larger is calmer
HOLIDAY_LIFT = 0.30
CHANNELS: tuple[str, ...] = ("email", "web", "chat", "phone", "social")
CHANNEL_P = np.array([0.4, 0.3, 0.15, 0.08, 0.07])
# UTC hour of day weights: most customers are in the Americas.
HOURS = np.array(
    [4, 3, 2, 1.5, 1, 1, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8, 8, 7.5, 7, 6.5, 6, 5],
    dtype=float,
)


@dataclass(frozen=True, slots=True)
class PlantedEvent:
    """One thing planted in the data, and what a correct pipeline should make of it.

    ``peak_factor`` multiplies the topic's daily complaint rate over the
    ``peak_days`` days from ``onset``; 1.0 for a harmless change.
    """

    name: str
    change_id: str | None
    topic: str
    onset: date
    peak_factor: float
    peak_days: int
    spike_expected: bool
    attributed: bool
    reverted_by: str | None = None


@dataclass(frozen=True, slots=True)
class DemoTruth:
    """What :func:`generate` wrote and planted."""

    tickets_path: Path
    changes_path: Path
    seed: int
    start: date
    days: int
    volume: float
    tickets: int
    events: tuple[PlantedEvent, ...]
    reverts: dict[str, str]  # reverting change_id -> the change_id it reverts
    change_ids: tuple[str, ...]
    # Complaints written per topic per day (index 0 = start), for checks that need no labeller.
    complaints_per_day: dict[str, list[int]] = field(default_factory=dict)
    # The support mailbox (``support.mbox``) and its known threads; None when not written.
    mailbox: MailboxTruth | None = None

    def event(self, name: str) -> PlantedEvent:
        return next(e for e in self.events if e.name == name)


# --------------------------------------------------------------------------- calendar


# The story, in days since ``start`` (the dates in the comments are for the default start).
ANDROID_TV = 102  # 2025-02-11
PROFILES_OUT = 157  # 2025-04-07, effective 2025-05-01
PROFILES_OUT_EFFECTIVE = 181
PROFILES_KEPT = 164  # 2025-04-14
SEARCH = 223  # 2025-06-12
INCIDENT_DAY = 231  # 2025-06-20
PRICE_RISE = 494  # 2026-03-10, effective 2026-04-10
PRICE_EFFECTIVE = 525
DVD_SPLIT = 591  # 2026-06-15
DVD_BACK = 612  # 2026-07-06
DOWNLOADS = 669  # 2026-09-01


def _changes(start: date) -> list[dict[str, Any]]:
    """The 8 changes, at their default dates when ``start`` is 2024-11-01."""

    def at(days: int) -> date:
        return start + timedelta(days=days)

    return [
        {
            "id": "release-android-tv",
            "title": "New Android TV app",
            "kind": "release",
            "announced_at": at(ANDROID_TV),
            "effective_at": at(ANDROID_TV),
            "description": "A rebuilt Android TV app with a new home screen.",
            "areas": ["apps"],
            "keywords": ["android tv", "app"],
        },
        {
            "id": "profiles-removal",
            "title": "Profiles will be removed",
            "kind": "feature_removal",
            "announced_at": at(PROFILES_OUT),
            "effective_at": at(PROFILES_OUT_EFFECTIVE),
            "description": "Viewer profiles are retired; one shared queue and history per account.",
            "areas": ["profiles"],
            "keywords": ["profile", "profiles", "queue", "family"],
        },
        {
            "id": "profiles-kept",
            "title": "Profiles are staying",
            "kind": "rollback",
            "announced_at": at(PROFILES_KEPT),
            "effective_at": at(PROFILES_KEPT),
            "description": "After member feedback, profiles will not be removed.",
            "areas": ["profiles"],
            "keywords": ["profile", "profiles"],
            "reverts": "profiles-removal",
        },
        {
            "id": "release-search",
            "title": "Faster search",
            "kind": "release",
            "announced_at": at(SEARCH),
            "effective_at": at(SEARCH),
            "description": "Search results appear as you type.",
            "areas": ["content"],
            "keywords": ["search"],
        },
        {
            "id": "price-rise",
            "title": "Plan price rise: streaming + DVD from $9.99 to $15.98",
            "kind": "price",
            "announced_at": at(PRICE_RISE),
            "effective_at": at(PRICE_EFFECTIVE),
            "description": (
                "The combined streaming and DVD plan goes from $9.99 to $15.98 a month "
                "(about 60%); streaming-only and DVD-only plans are $7.99 each."
            ),
            "areas": ["pricing"],
            "keywords": ["price", "bill", "$15.98", "$16", "plan", "charge"],
        },
        {
            "id": "dvd-split",
            "title": "DVD service becomes Qwikster",
            "kind": "service_split",
            "announced_at": at(DVD_SPLIT),
            "effective_at": at(DVD_SPLIT),
            "description": (
                "DVD rental moves to Qwikster, a separate website with separate billing "
                "and its own queue."
            ),
            "areas": ["dvd"],
            "keywords": ["qwikster", "dvd", "two websites", "two bills", "queue"],
        },
        {
            "id": "dvd-split-reversed",
            "title": "Qwikster cancelled: DVDs stay on Reelbox",
            "kind": "rollback",
            "announced_at": at(DVD_BACK),
            "effective_at": at(DVD_BACK),
            "description": "DVD rental stays on the Reelbox website with one account and one bill.",
            "areas": ["dvd"],
            "keywords": ["qwikster", "dvd"],
            "reverts": "dvd-split",
        },
        {
            "id": "release-downloads",
            "title": "Offline downloads on iOS",
            "kind": "release",
            "announced_at": at(DOWNLOADS),
            "effective_at": at(DOWNLOADS),
            "description": "Download shows and movies to watch offline on iPhone and iPad.",
            "areas": ["content"],
            "keywords": ["downloads", "offline", "ios"],
        },
    ]


def _write_changes(path: Path, changes: list[dict[str, Any]]) -> None:
    header = (
        "# Reelbox product-change calendar (generated by flows/demo_company.py).\n"
        "# Fields: id, title, kind, announced_at, effective_at, description, areas,\n"
        "# keywords, reverts. Bare dates are 00:00 UTC.\n"
    )
    body = yaml.safe_dump({"changes": changes}, sort_keys=False, allow_unicode=True, width=100)
    path.write_text(header + body, encoding="utf-8")


# --------------------------------------------------------------------------- counts


def _multipliers(days: int) -> dict[str, np.ndarray]:
    """Per-event multipliers of a topic's complaint rate, per day since ``start``.

    Built as "excess over 1" curves so background and backlash stay separable.
    """
    t = np.arange(days, dtype=float)

    def after(onset: int) -> np.ndarray:
        return t >= onset

    # Profiles: x5 from the announcement until the reversal a week later, gone in ~2 days.
    profiles = np.where((t >= PROFILES_OUT) & (t < PROFILES_KEPT), 4.0, 0.0)
    profiles = profiles + np.where(
        after(PROFILES_KEPT), 2.0 * np.exp(-(t - PROFILES_KEPT) / 1.0), 0.0
    )
    profiles = np.where(t - PROFILES_KEPT > 4, 0.0, profiles)
    # Price: x5 on the announcement, decaying over ~3 weeks; a second bump with the first bills.
    price = np.where(
        after(PRICE_RISE), 4.0 * np.exp(-np.clip(t - PRICE_RISE - 2, 0, None) / 6.0), 0.0
    )
    price = price + np.where(
        after(PRICE_EFFECTIVE), 2.0 * np.exp(-(t - PRICE_EFFECTIVE) / 4.0), 0.0
    )
    price = np.where(t - PRICE_RISE > 60, 0.0, price)
    # Qwikster: x4 for three weeks, then back to normal within a few days of the reversal.
    dvd = np.where(
        (t >= DVD_SPLIT) & (t < DVD_BACK), 3.0 - 0.3 * np.clip(t - DVD_SPLIT, 0, None) / 21, 0.0
    )
    dvd = dvd + np.where(after(DVD_BACK), 2.2 * np.exp(-(t - DVD_BACK) / 1.5), 0.0)
    dvd = np.where(t - DVD_BACK > 8, 0.0, dvd)
    return {
        "profiles-removal": profiles,
        "price-rise": price,
        "dvd-split": dvd,
    }


EVENT_TOPIC: dict[str, str] = {
    "profiles-removal": "profiles",
    "price-rise": "pricing",
    "dvd-split": "dvd",
}
INCIDENT_HOURS = (2, 38)  # from 02:00 on the first day, 36 hours
INCIDENT_FACTOR = 6.0


def _level(start: date, days: int) -> np.ndarray:
    """Expected-volume multiplier per day: weekday x growth x holidays."""
    dates = [start + timedelta(days=i) for i in range(days)]
    weekday = WEEKDAY[np.array([d.weekday() for d in dates])]
    growth = 1.0 + GROWTH * np.arange(days) / max(days - 1, 1)
    holiday = np.ones(days)
    for i, d in enumerate(dates):
        # A smooth bump around Christmas: everything rises together, not a backlash.
        anchor = date(d.year if d.month == 12 else d.year - 1, 12, 25)
        distance = abs((d - anchor).days)
        if distance <= 14:
            holiday[i] += HOLIDAY_LIFT * 0.5 * (1 + np.cos(np.pi * distance / 14))
    return weekday * growth * holiday


# --------------------------------------------------------------------------- text

FIRST = (
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "david",
    "elizabeth",
    "william",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "carlos",
    "maria",
    "wei",
    "mei",
    "arjun",
    "priya",
    "ahmed",
    "fatima",
    "olga",
    "ivan",
    "kenji",
    "yuki",
    "liam",
    "emma",
    "noah",
    "olivia",
    "lucas",
    "sofia",
    "mateo",
    "camila",
    "chloe",
    "ethan",
    "zoe",
    "amara",
    "kwame",
    "ines",
    "tomas",
)
LAST = (
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "nguyen",
    "kim",
    "patel",
    "okafor",
    "novak",
    "schmidt",
    "rossi",
    "dubois",
)
DOMAINS = ("example.com", "example.com", "example.com", "example.org", "example.net")

GREETINGS = ("Hi,", "Hello,", "Hi there,", "Dear Reelbox team,", "Hey,", "Good morning,", "")
INLINE_GREETINGS = ("Hi!", "Hello.", "Hi there.", "Hey.", "Good morning.", "", "", "")
SIGNOFFS = ("Thanks,", "Regards,", "Thank you,", "Cheers,", "Best,", "--")

# Per topic: what a background complaint says. Slots: {plan}, {title}, {device}, {n}.
COMPLAINTS: dict[str, tuple[str, ...]] = {
    "pricing": (
        "I was charged twice this month for my plan.",
        "My bill is higher than the price of the {plan} plan I signed up for.",
        "There is a charge on my card I do not recognise from Reelbox.",
        "You billed me after I downgraded my plan, please refund the difference.",
        "The price on my invoice does not match the price on your website.",
        "I got charged {n} days early this month and my account went overdrawn.",
        "Why was I billed for the premium plan? I never upgraded.",
        "The promo price I was promised ended without any warning on my bill.",
    ),
    "dvd": (
        "The DVD I returned {n} days ago still shows as out.",
        "My disc arrived cracked, this is the third time this month.",
        "The wrong DVD came in the mail, it was not the next disc in my queue.",
        "My DVD queue skipped the next disc and sent something at the bottom.",
        "Disc for {title} never arrived, it has been over a week.",
        "The DVD sleeve was empty, no disc inside.",
        "Your DVD shipping is so slow lately, {n} days for one disc.",
    ),
    "profiles": (
        "My kids' profile keeps showing my shows and my profile shows cartoons.",
        "I can't add a fifth profile for my family, why is the limit so low?",
        "My profile vanished overnight along with everything I had saved.",
        "Someone deleted my profile and now my list is empty.",
        "The picture and name on my profile change back every week.",
        "Profiles keep mixing up recommendations between me and my partner.",
    ),
    "playback": (
        "Videos keep buffering on my {device} even on a fast connection.",
        "{title} won't play, I just get an error code.",
        "The picture freezes every few minutes while the sound keeps going.",
        "Playback stops and the app crashes on my {device}.",
        "Streaming quality drops to blurry all the time, buffering constantly.",
        "Subtitles are out of sync and the video stutters on my {device}.",
    ),
    "account": (
        "I can't log in, the password reset email never arrives.",
        "My account was locked after I changed my password.",
        "My account was hacked, someone changed my password from another country.",
        "The login page keeps saying my password is wrong even after a reset.",
        "I am stuck in a loop between sign in and the account page.",
        "Two-step verification codes never arrive so I can't sign in.",
    ),
    "content": (
        "{title} disappeared from the catalog in the middle of the season.",
        "Why did you remove so many movies this month? The catalog keeps shrinking.",
        "The shows I want are never available, the selection is poor.",
        "{title} vanished from the catalog, was it taken down?",
        "Half my list is gone, you have taken down the movies I was saving.",
        "New releases take forever to show up, the movie selection is weak.",
    ),
}
COMPLAINT_SUBJECTS: dict[str, tuple[str, ...]] = {
    "pricing": ("Wrong charge", "Billing problem", "Charged twice", "Refund please", "My bill"),
    "dvd": ("DVD problem", "Disc never arrived", "Broken disc", "Wrong DVD", "DVD queue"),
    "profiles": ("Profile problem", "Profiles", "Lost my profile", "Profile mix-up"),
    "playback": ("Buffering", "Video won't play", "Playback error", "Streaming problem"),
    "account": ("Can't log in", "Password reset", "Login problem", "Account locked"),
    "content": ("Missing movies", "Catalog", "Show removed", "Where did my show go"),
}
# Backlash texts: what customers say about the change itself, in their words.
BACKLASH: dict[str, tuple[str, ...]] = {
    "price-rise": (
        "My bill went up from $9.99 to $15.98 and nobody asked me. Not happy.",
        "You raised the price again? $16 a month is too much for what you offer.",
        "A 60% price increase is outrageous, I got the notice about the new price today.",
        "$15.98 a month is not worth it, the old price was fair.",
        "The new price is ridiculous, my monthly charge almost doubled.",
        "Why is my plan going from $9.99 to $15.98? That is a huge price hike.",
        "I just saw the price rise. This is a cash grab, plain and simple.",
        "my bill went up AGAIN. you raised the price without asking anyone",
        "Sixteen dollars a month? The price increase is way too much for my budget.",
        "My card was charged $15.98 today instead of $9.99, this price increase is too much.",
        "We have been members for {n} years and you repay us with a price hike.",
    ),
    "dvd-split": (
        "What is Qwikster? Why do I need a second website for my DVDs? Ridiculous.",
        "Now I have two websites and two queues for my DVDs. This Qwikster thing is terrible.",
        "My DVD queue is gone from Reelbox and I have to rebuild it on Qwikster. Unacceptable.",
        "No Qwikster account for me, I want my DVDs on Reelbox like before. Very disappointed.",
        "Splitting the DVD service into Qwikster is the worst idea, my disc ratings are gone.",
        "Why split DVDs off into Qwikster? Worst decision ever, I want my discs in one place.",
        "Two websites to rent a DVD? Qwikster is a terrible name and a worse idea.",
        "My DVD queue on Qwikster is empty and the discs I rated are missing.",
        "Please undo Qwikster, managing two queues for DVDs is ridiculous.",
        "Two bills now, one from Reelbox and one from Qwikster for my DVDs. Ridiculous.",
    ),
    "profiles-removal": (
        "You are removing profiles? My whole family shares this account. Terrible idea.",
        "Please don't remove profiles, my kids need their own profile. Very disappointed.",
        "Removing profiles means everyone in the house shares one profile. Ridiculous.",
        "I just read that profiles are going away. That is a terrible decision.",
        "Without profiles, four of us will share one list. Unacceptable, keep profiles!",
        "Why take away profiles? It is the one feature we use every day.",
    ),
    "incident": (
        "Nothing will play tonight, every title is stuck buffering. Unacceptable.",
        "Streaming is down, {title} won't play and I get an error on every device.",
        "Is Reelbox down? Videos won't play on my {device} or my phone.",
        "Playback error on everything since this morning, I can't watch anything. Not happy.",
        "The app says playback unavailable. Buffering forever on my {device}.",
    ),
}
BACKLASH_SUBJECTS: dict[str, tuple[str, ...]] = {
    "price-rise": ("Price increase", "My bill went up", "New price", "Price hike", "$15.98?!"),
    "dvd-split": ("Qwikster", "Two websites?", "DVD queue gone", "What is Qwikster", "DVD split"),
    "profiles-removal": ("Keep profiles", "Profiles removal", "Don't remove profiles"),
    "incident": ("Nothing plays", "Streaming down?", "Playback error", "Won't play"),
}
# Context people add around the point, in any kind of ticket.
CONTEXT = (
    "I have been a member since {year}.",
    "I'm on the {plan} plan.",
    "I have been a fan for years.",
    "I'm the main member in our house.",
    "I am writing for my parents.",
    "I already checked the help center.",
    "My husband asked me to write in.",
    "There are {n} of us at home.",
    "I tried the chat first but it timed out.",
    "Long time customer here.",
)
DETAIL = (
    "This started {n} days ago.",
    "I have tried restarting everything.",
    "It happened again this morning.",
    "This is the second time I write about this.",
    "Your help page did not answer it.",
    "I already spent an hour on this.",
)
CANCEL = (
    "I am cancelling my subscription.",
    "Cancel my account at the end of this month.",
    "I'm switching to a competitor.",
    "If this isn't fixed I will cancel.",
    "Please close my account, I'm done.",
    "We are switching to a competitor after {n} years with you.",
)
ANGER = (
    "This is unacceptable.",
    "Very disappointed.",
    "Fix it.",
    "I expect better from you.",
    "Not happy at all.",
    "Honestly, what are you thinking?",
)
POLITE = (
    "I would appreciate your help with this.",
    "Could you please look into it?",
    "I hope this can be sorted out soon.",
    "Thank you for looking into it.",
)
# Non-complaints: questions, requests and praise, per topic.
OTHERS: dict[str, dict[str, tuple[str, ...]]] = {
    "question": {
        "pricing": (
            "How do I download an invoice for my records?",
            "Which payment methods do you accept?",
            "What day of the month will my plan renew?",
        ),
        "dvd": (
            "How many DVDs can I have out at once on my plan?",
            "Can I reorder the discs in my DVD queue from the app?",
            "Do you ship DVDs to Alaska?",
        ),
        "profiles": (
            "How do I set up a profile for my daughter?",
            "Can I change the language of just my profile?",
            "How do I add a profile picture?",
        ),
        "playback": (
            "How do I turn on subtitles on my {device}?",
            "What internet speed do I need for HD streaming?",
            "Can I watch on two screens at the same time?",
        ),
        "account": (
            "How do I change the email address on my account?",
            "Where can I see which devices are signed in?",
            "How do I turn on two-step verification?",
        ),
        "content": (
            "Will {title} be added to the catalog?",
            "Is there a way to see what is coming next month?",
            "Do you have {title} in 4K?",
        ),
    },
    "request": {
        "pricing": (
            "Please update the card on file for my plan.",
            "Could you send me a copy of last month's receipt?",
            "I would like to switch to yearly billing if possible.",
        ),
        "dvd": (
            "Please change my shipping address for DVDs to {street}.",
            "Could you add more classic films to the DVD library?",
            "Please put my DVD deliveries on hold while I travel.",
        ),
        "profiles": (
            "Please merge my two profiles into one.",
            "Could you add a kids profile option for teenagers?",
            "Please restore the name on my profile to the old one.",
        ),
        "playback": (
            "Please add an option to turn off autoplay of previews.",
            "Could you support audio description on {title}?",
            "I would like a sleep timer in the app.",
        ),
        "account": (
            "Please update my mailing address to {street}.",
            "Could you change the name on my account after my marriage?",
            "Please send the account statements to my new email.",
        ),
        "content": (
            "Please add {title} to the catalog.",
            "Could you add more documentaries?",
            "Please bring back the original audio option for anime.",
        ),
    },
    "praise": {
        "pricing": ("Just wanted to say the yearly plan is a great deal.",),
        "dvd": ("The DVD arrived in one day, amazing service as always.",),
        "profiles": ("Love that each of us has a profile with our own list.",),
        "playback": ("The picture quality on my {device} is fantastic.",),
        "account": ("Your support agent fixed my login in two minutes, thank you!",),
        "content": ("{title} was brilliant, thanks for adding it.",),
    },
}
# What customers ask or say about a change without complaining: a release is
# talked about, a price rise raises questions. Busier, but not a backlash.
# change_id -> (topic, share of the day's non-complaints at the peak, kind -> texts)
CHATTER: dict[str, tuple[str, float, dict[str, tuple[str, ...]]]] = {
    "release-android-tv": (
        "playback",
        0.08,
        {
            "question": (
                "Is the new Android TV app available on my Sony TV?",
                "How do I update to the new Android TV app?",
                "Where did the continue row go in the new Android TV app?",
            ),
            "praise": (
                "Love the new Android TV app, the home screen is much cleaner.",
                "The new Android TV app is great, well done.",
            ),
        },
    ),
    "release-search": (
        "content",
        0.06,
        {
            "question": ("Does the new search also find actors and directors?",),
            "praise": ("Search is so much faster now, great job!",),
        },
    ),
    "price-rise": (
        "pricing",
        0.10,
        {
            "question": (
                "When does the new price start for my plan?",
                "Is there a yearly option at the old price?",
                "Will the DVD-only plan stay at $7.99?",
            ),
        },
    ),
    "dvd-split": (
        "dvd",
        0.08,
        {
            "question": (
                "Where do I find my DVD queue on Qwikster?",
                "Do my DVD ratings move to Qwikster automatically?",
            ),
        },
    ),
    "release-downloads": (
        "content",
        0.08,
        {
            "question": (
                "How many downloads can I keep on my iPad?",
                "Do offline downloads expire after a while?",
            ),
            "praise": ("Offline downloads on iOS are fantastic, perfect for my flights.",),
        },
    ),
}
OTHER_SUBJECTS: dict[str, tuple[str, ...]] = {
    "question": ("Question", "Quick question", "How do I...", "Help please", "Info"),
    "request": ("Request", "Account update", "Change request", "Suggestion"),
    "praise": ("Thank you!", "Great service", "Kudos", "Love it"),
}
TITLES = (
    "The Long Coast",
    "Midnight Harbor",
    "Paper Moons",
    "Red Canyon",
    "The Quiet Year",
    "Glass City",
    "Northbound",
    "Salt and Iron",
    "Little Comets",
    "The Archivist",
)
DEVICES = ("TV", "smart TV", "Roku", "Xbox", "iPad", "laptop", "Android phone", "PS5")
PLANS = ("basic", "standard", "premium", "streaming + DVD")
STREETS = ("12 Oak Street", "400 Pine Ave, Apt 3", "77 Lake Road", "9 Elm Court")
PHONES = ("415-555-0134", "(212) 555-0198", "+1 646 555 0111", "312.555.0172")
CARDS = ("4111 1111 1111 1111", "5500-0000-0000-0004", "4012888888881881")


class _Picker:
    """Cheap seeded choices for text: one NumPy draw of uniforms, consumed in order.

    Per-call NumPy sampling costs microseconds; a ticket needs ~15 choices and
    the demo has ~150k tickets, so uniforms are drawn in bulk instead.
    """

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        # A bound ``__next__`` is the cheapest call Python has: this is the hot path.
        self.u: Callable[[], float] = iter(rng.random(n).tolist()).__next__

    def pick(self, options: Sequence[str]) -> str:
        return options[int(self.u() * len(options))]

    def chance(self, p: float) -> bool:
        return self.u() < p


def _fill(text: str, pick: _Picker) -> str:
    if "{" not in text:
        return text
    return text.format(
        title=pick.pick(TITLES),
        device=pick.pick(DEVICES),
        plan=pick.pick(PLANS),
        n=2 + int(pick.u() * 9),
        year=2008 + int(pick.u() * 16),
        street=pick.pick(STREETS),
    )


def _typo(text: str, pick: _Picker) -> str:
    """Swap two neighbouring letters of one word: people type fast when annoyed."""
    words = text.split(" ")
    index = int(pick.u() * len(words))
    word = words[index]
    if len(word) > 4 and word.isalpha():
        k = 1 + int(pick.u() * (len(word) - 3))
        words[index] = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    return " ".join(words)


def _body(
    core: list[str], pick: _Picker, *, complaint: bool, cancel: bool, card: bool, name: str
) -> str:
    sentences = list(core)
    if pick.chance(0.45):
        sentences.insert(0 if pick.chance(0.5) else len(sentences), _fill(pick.pick(CONTEXT), pick))
    if complaint and pick.chance(0.4):
        sentences.append(_fill(pick.pick(DETAIL), pick))
    if complaint:
        if cancel:
            sentences.append(_fill(pick.pick(CANCEL), pick))
        sentences.append(pick.pick(ANGER) if pick.chance(0.5) else pick.pick(POLITE))
    if pick.chance(0.06):
        sentences.append(f"You can call me on {pick.pick(PHONES)}.")
    if card and pick.chance(0.05):
        sentences.append(f"The card on file is {pick.pick(CARDS)}, check it yourself.")
    text = " ".join(sentences)
    if complaint and pick.chance(0.07):
        text = text.upper()
    elif pick.chance(0.1):
        text = _typo(text, pick)
    if pick.chance(0.35):  # an email-style, multi-line message
        parts = [pick.pick(GREETINGS), text, f"{pick.pick(SIGNOFFS)}\n{name.title()}"]
        return "\n\n".join(p for p in parts if p)
    return f"{pick.pick(INLINE_GREETINGS)} {text}".strip()


# --------------------------------------------------------------------------- assembly


@dataclass(slots=True)
class _Batch:
    """Tickets of one kind, as arrays until the text is written."""

    day: np.ndarray
    second: np.ndarray  # seconds into the day
    topic: str
    kind: str  # complaint | question | request | praise
    pool: str | None  # backlash pool name, or None for the background texts
    cancel_p: float


def _seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    """Seconds into the day, following the diurnal profile."""
    hour = rng.choice(24, size=n, p=HOURS / HOURS.sum())
    return hour * 3600 + rng.integers(0, 3600, size=n)


def _repeat_days(counts: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(counts.size), counts)


def _batches(rng: np.random.Generator, start: date, days: int, volume: float) -> list[_Batch]:
    level = _level(start, days) * volume
    batches: list[_Batch] = []
    # Day-to-day noise shared by all of a topic's complaints that day (gamma-Poisson).
    noise = rng.gamma(DISPERSION, 1.0 / DISPERSION, size=(len(TOPICS), days))
    multipliers = _multipliers(days)
    for k, topic in enumerate(TOPICS):
        rate = COMPLAINT_RATE[topic] * level * noise[k]
        counts = rng.poisson(rate)
        day = _repeat_days(counts)
        batches.append(_Batch(day, _seconds(rng, day.size), topic, "complaint", None, 0.05))
        for change_id, curve in multipliers.items():
            if EVENT_TOPIC[change_id] != topic:
                continue
            extra = rng.poisson(rate * curve)
            eday = _repeat_days(extra)
            onset = int(np.argmax(curve > 0)) if curve.any() else -1
            second = _seconds(rng, eday.size)
            # On the announcement day the backlash starts in the morning, not at midnight.
            second = np.where(eday == onset, 8 * 3600 + second * 2 // 3, second)
            cancel = {"price-rise": 0.5, "dvd-split": 0.35}.get(change_id, 0.1)
            batches.append(_Batch(eday, second, topic, "complaint", change_id, cancel))
        if topic == "playback" and days > INCIDENT_DAY + 1:
            first, last = INCIDENT_HOURS
            hourly = COMPLAINT_RATE[topic] * level[INCIDENT_DAY] / 24.0
            n = int(rng.poisson(hourly * (INCIDENT_FACTOR - 1) * (last - first)))
            offset = rng.integers(first * 3600, last * 3600, size=n)
            batches.append(
                _Batch(
                    INCIDENT_DAY + offset // 86400,
                    offset % 86400,
                    topic,
                    "complaint",
                    "incident",
                    0.05,
                )
            )
    others = rng.poisson(OTHER_RATE * level * rng.gamma(DISPERSION, 1.0 / DISPERSION, days))
    day = _repeat_days(others)
    kind = rng.choice(len(OTHER_KINDS), size=day.size, p=OTHER_KIND_P)
    topic_of = rng.integers(0, len(TOPICS), size=day.size)
    second = _seconds(rng, day.size)
    for ki, kname in enumerate(OTHER_KINDS):
        for ti, tname in enumerate(TOPICS):
            mask = (kind == ki) & (topic_of == ti)
            batches.append(_Batch(day[mask], second[mask], tname, kname, None, 0.0))
    t = np.arange(days, dtype=float)
    for change in _changes(start):
        if change["id"] not in CHATTER:
            continue
        topic, share, texts = CHATTER[change["id"]]
        onset = (change["announced_at"] - start).days
        curve = np.where((t >= onset) & (t < onset + 10), share * np.exp(-(t - onset) / 3), 0.0)
        counts = rng.poisson(OTHER_RATE * level * curve)
        for kname, kcounts in zip(
            texts, rng.multinomial(counts, [1 / len(texts)] * len(texts)).T, strict=True
        ):
            kday = _repeat_days(kcounts)
            batches.append(
                _Batch(kday, _seconds(rng, kday.size), topic, kname, f"chatter:{change['id']}", 0.0)
            )
    return batches


def _compose(batch: _Batch, pick: _Picker, name: str) -> tuple[str, str, bool]:
    """Subject, body and cancel intent of one customer's first message.

    Shared by the ticket export and the mailbox; the order of draws is part of
    the seed's story (``tickets.csv`` stays byte-identical), so do not reorder.
    """
    complaint = batch.kind == "complaint"
    cancel = complaint and pick.chance(batch.cancel_p)
    if batch.pool is not None and batch.pool.startswith("chatter:"):
        subject = pick.pick(OTHER_SUBJECTS[batch.kind])
        core = [pick.pick(CHATTER[batch.pool.removeprefix("chatter:")][2][batch.kind])]
    elif batch.pool is not None:
        subject = pick.pick(BACKLASH_SUBJECTS[batch.pool])
        core = [_fill(pick.pick(BACKLASH[batch.pool]), pick)]
        if pick.chance(0.4):
            core.append(_fill(pick.pick(BACKLASH[batch.pool]), pick))
    elif complaint:
        subject = pick.pick(COMPLAINT_SUBJECTS[batch.topic])
        core = [_fill(pick.pick(COMPLAINTS[batch.topic]), pick)]
    else:
        subject = pick.pick(OTHER_SUBJECTS[batch.kind])
        core = [_fill(pick.pick(OTHERS[batch.kind][batch.topic]), pick)]
    card = complaint and batch.topic == "pricing"
    body = _body(core, pick, complaint=complaint, cancel=cancel, card=card, name=name)
    return subject, body, cancel


def _tickets(
    rng: np.random.Generator, batches: list[_Batch], start: date, days: int
) -> list[list[str]]:
    day = np.concatenate([b.day for b in batches])
    second = np.concatenate([b.second for b in batches])
    which = np.concatenate([np.full(b.day.size, i) for i, b in enumerate(batches)])
    order = np.lexsort((np.arange(day.size), second, day))  # by time, ties by generation order
    day, second, which = day[order], second[order], which[order]
    n = int(day.size)
    # Everything but the text is drawn as arrays: the per-ticket loop is the cost.
    stamps = np.datetime64(start.isoformat(), "s") + (day * 86400 + second).astype("timedelta64[s]")
    created = [f"{text}Z" for text in np.datetime_as_string(stamps, unit="s").tolist()]
    channel = np.array(CHANNELS)[rng.choice(len(CHANNELS), size=n, p=CHANNEL_P)].tolist()
    first = np.array(FIRST)[rng.integers(0, len(FIRST), size=n)].tolist()
    last = np.array(LAST)[rng.integers(0, len(LAST), size=n)].tolist()
    dotted = (rng.random(n) < 0.8).tolist()
    suffix = rng.integers(10, 99, size=n).tolist()
    domain = np.array(DOMAINS)[rng.integers(0, len(DOMAINS), size=n)].tolist()
    old = (days - day) > 7
    closed = rng.random(n) < np.where(old, 0.7, 0.6)
    status = np.where(
        old, np.where(closed, "closed", "solved"), np.where(closed, "open", "pending")
    )
    status_list = status.tolist()
    pick = _Picker(rng, n * 24)
    rows: list[list[str]] = []
    for i, b in enumerate(which.tolist()):
        batch = batches[b]
        name = f"{first[i]} {last[i]}"
        local = f"{first[i]}.{last[i]}" if dotted[i] else f"{first[i]}{last[i]}{suffix[i]}"
        subject, body, cancel = _compose(batch, pick, name)
        tags = [TOPIC_TAG[batch.topic], batch.kind]
        if cancel:
            tags.append("cancel")
        if batch.pool == "incident":
            tags.append("outage")
        rows.append(
            [
                str(100001 + i),
                created[i],
                subject,
                body,
                channel[i],
                f"{local}@{domain[i]}",
                " ".join(tags),
                status_list[i],
            ]
        )
    return rows


COLUMNS = ("id", "created_at", "subject", "body", "channel", "requester", "tags", "status")


# --------------------------------------------------------------------------- mailbox

# Extra conversations that reach support@ by email, as a share of the ticket
# volume: drawn like the tickets (same seasonality, same planted backlashes), so
# a backlash is visible in the inbox too, with an RNG of its own so that
# ``tickets.csv`` stays byte-identical for a seed.
EMAIL_SHARE = 0.12
SUPPORT_ADDRESS = "support@reelbox.example"
SUPPORT_DOMAIN = "@reelbox.example"
MAIL_STREAM = 0x6D61696C  # "mail": the mailbox's RNG is default_rng([seed, MAIL_STREAM])
AGENTS = ("Dana", "Luis", "Priya", "Tom", "Aiko")
# Display names as customers' mail clients send them (RFC 2047 in the header).
ACCENTED = {"ines": "Inès", "tomas": "Tomás", "zoe": "Zoë", "chloe": "Chloé", "mateo": "Matéo"}
CUSTOMER_HOSTS = {"example.com": "mail.example.com", "example.org": "mx.example.org"}
# Customers' UTC offsets in minutes: most are in the Americas.
OFFSETS = (-480, -420, -360, -300, -300, -300, -240, -240, 0, 60, 60, 120)
REPLY_PREFIXES = ("Re: ", "Re: ", "Re: ", "RE: ", "AW: ", "Re: Re: ")
MAIL_CLIENTS = (
    "Mozilla Thunderbird",
    "Apple Mail (2.3774)",
    "Microsoft Outlook 16.0",
    "Roundcube Webmail",
    "iPhone Mail (21E236)",
)
AGENT_REPLIES: dict[str, tuple[str, ...]] = {
    "complaint": (
        "Thanks for getting in touch, and I'm sorry about this. I have passed it to the "
        "team and will update you within 48 hours.",
        "Sorry for the trouble. Could you tell me which device and app version you use?",
        "I understand how frustrating this is. I've added a note to your account and "
        "escalated it to the right team.",
        "Thank you for telling us. I have shared your feedback with the product team.",
    ),
    "question": (
        "Thanks for your question! You can find this under Account > Settings.",
        "Good question: yes, that is possible, the Help Center article below has the steps.",
    ),
    "request": (
        "Done! The change is made on your account.",
        "Thanks, I've made that change for you; it can take an hour to show.",
    ),
    "praise": ("Thank you so much for the kind words, I've shared them with the team!",),
}
FOLLOWUPS: dict[str, tuple[str, ...]] = {
    "complaint": (
        "Any update on this? It has been {n} days.",
        "That did not help, it is still happening.",
        "Still waiting for an answer here.",
        "Thanks, that fixed it.",
        "OK, thanks for letting me know.",
    ),
    "other": ("Thanks, that worked!", "Perfect, thank you.", "Got it, thanks.", "Great, thanks."),
}
AUTO_ACK = (
    "Thanks for writing to Reelbox. This is an automatic confirmation: a member of the "
    "team will answer within one business day.\n\nReelbox Support"
)
OUT_OF_OFFICE = (
    "I am out of the office until {day} with limited access to email. "
    "For anything urgent call me on {phone}.",
    "Thank you for your message. I am on vacation and will reply when I am back.",
)


@dataclass(frozen=True, slots=True)
class MailConversation:
    """One conversation in ``support.mbox``, as a person would thread it.

    ``root_id`` is the Message-ID (no brackets) of its first message: the
    pipeline keys a thread's ticket by it. ``kind`` is ``complaint``,
    ``question``, ``request``, ``praise`` or ``auto`` (a bounce or an
    auto-reply on its own: machine mail that must never count).
    """

    root_id: str
    message_ids: tuple[str, ...]
    customer: str
    topic: str | None
    kind: str
    pool: str | None
    created_at: datetime
    subject: str = ""
    cancel: bool = False
    # Customer replies that lost every threading header: only the subject can join them.
    headerless: tuple[str, ...] = ()

    @property
    def is_auto(self) -> bool:
        return self.kind == "auto"


@dataclass(frozen=True, slots=True)
class MailboxTruth:
    """What ``support.mbox`` holds: every conversation and the thread of every message."""

    path: Path
    conversations: tuple[MailConversation, ...]
    messages: int
    # Message-ID -> root Message-ID of its conversation (the known threads).
    thread_of: dict[str, str]
    # Same marks as the message headers: how many replies lost which threading headers.
    dropped_references: int = 0
    dropped_all_headers: int = 0
    auto_messages: int = 0
    # Email complaint conversations per topic per day (index 0 = start).
    complaints_per_day: dict[str, list[int]] = field(default_factory=dict)


@dataclass(slots=True)
class _Mail:
    """One message before it is rendered: sorted by time, then by creation."""

    at: datetime  # UTC
    seq: int
    raw: str


def _rfc2822(at: datetime, offset_minutes: int) -> str:
    local = at.astimezone(timezone(timedelta(minutes=offset_minutes)))
    return format_datetime(local)


def _address(name: str, addr: str) -> str:
    return formataddr((name, addr), charset="utf-8")


def _quote(text: str, who: str, at: datetime, outlook: bool) -> str:
    """Quoted history under a reply, the two ways mail clients write it."""
    if outlook:
        head = (
            f"-----Original Message-----\nFrom: {who}\nSent: {format_datetime(at)}\n"
            f"To: {SUPPORT_ADDRESS}\n"
        )
        return head + "\n" + text
    lines = "\n".join(f"> {line}" if line else ">" for line in text.splitlines())
    return f"On {format_datetime(at)}, {who} wrote:\n{lines}"


def _html(text: str, quoted: str | None) -> str:
    paras = "".join(f"<p>{html_escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n"))
    if quoted:
        head, _, rest = quoted.partition("\n")
        body = html_escape("\n".join(line.removeprefix("> ") for line in rest.splitlines()))
        paras += f"<div>{html_escape(head)}</div><blockquote>{body}</blockquote>"
    return (
        '<html><head><meta charset="utf-8"><style>p{margin:0 0 1em}</style></head>'
        f"<body>{paras}</body></html>"
    )


def _encoded(text: str, pick: _Picker, subtype: str = "plain") -> tuple[str, str]:
    """(headers, body) of one text part: 7bit/8bit, quoted-printable or base64."""
    roll = pick.u()
    if roll < 0.2:
        cte, body = "quoted-printable", quoprimime.body_encode(text)
    elif roll < 0.24:
        cte = "base64"
        body = base64.encodebytes(text.encode("utf-8")).decode("ascii").rstrip("\n")
    else:
        cte, body = ("7bit" if text.isascii() else "8bit"), text
    head = f'Content-Type: text/{subtype}; charset="utf-8"\nContent-Transfer-Encoding: {cte}\n'
    return head, body


def _render(
    headers: list[tuple[str, str]], text: str, pick: _Picker, *, quoted: str | None, html: float
) -> str:
    """One RFC 822 message: plain, HTML-only, or multipart/alternative."""
    head = "".join(f"{k}: {v}\n" for k, v in headers) + "MIME-Version: 1.0\n"
    plain = text if quoted is None else f"{text}\n\n{quoted}"
    roll = pick.u()
    if roll < html:  # HTML only: widgets and some phones
        part_head, body = _encoded(_html(text, quoted), pick, "html")
        return f"{head}{part_head}\n{body}\n"
    if roll < html + 0.15:
        boundary = f"----=_Part_{int(pick.u() * 1e9)}"
        text_head, text_body = _encoded(plain, pick)
        html_head, html_body = _encoded(_html(text, quoted), pick, "html")
        return (
            f'{head}Content-Type: multipart/alternative; boundary="{boundary}"\n\n'
            f"--{boundary}\n{text_head}\n{text_body}\n"
            f"--{boundary}\n{html_head}\n{html_body}\n--{boundary}--\n"
        )
    part_head, body = _encoded(plain, pick)
    return f"{head}{part_head}\n{body}\n"


def _bounce(at: datetime, seq: int, msg_id: str, to: str, subject: str, pick: _Picker) -> str:
    """A delivery failure for an agent's answer to a mistyped address: machine mail."""
    boundary = f"bounce.{seq}"
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.reelbox.example>\n"
        f"To: {SUPPORT_ADDRESS}\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: {_rfc2822(at, 0)}\nMessage-ID: <{msg_id}>\nAuto-Submitted: auto-replied\n"
        f"MIME-Version: 1.0\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\n\n'
        f"--{boundary}\nContent-Type: text/plain; charset=us-ascii\n\n"
        f"I'm sorry to have to inform you that your message could not be delivered.\n"
        f"<{to}>: host {to.split('@')[1]} said: 550 5.1.1 User unknown\n"
        f"--{boundary}\nContent-Type: message/delivery-status\n\n"
        f"Reporting-MTA: dns; mx.reelbox.example\n\nFinal-Recipient: rfc822; {to}\n"
        f"Action: failed\nStatus: 5.1.1\n"
        f"--{boundary}\nContent-Type: text/rfc822-headers\n\n"
        f"From: {SUPPORT_ADDRESS}\nTo: {to}\nSubject: Re: {subject}\n"
        f"--{boundary}--\n"
    )


def _mailbox(
    rng: np.random.Generator, start: date, days: int, volume: float
) -> tuple[list[_Mail], list[MailConversation], dict[str, int]]:
    """Every message of the support mailbox and the conversations they make.

    Conversations are drawn like tickets (so the planted events show in the
    inbox), then played out: an optional auto-acknowledgement, an agent's
    answer, the customer's reply (some clients drop References, a few drop
    every threading header), more answers, the odd out-of-office and bounce.
    """
    batches = _batches(rng, start, days, volume * EMAIL_SHARE)
    day = np.concatenate([b.day for b in batches])
    second = np.concatenate([b.second for b in batches])
    which = np.concatenate([np.full(b.day.size, i) for i, b in enumerate(batches)])
    order = np.lexsort((np.arange(day.size), second, day))
    day, second, which = day[order], second[order], which[order]
    n = int(day.size)
    first = np.array(FIRST)[rng.integers(0, len(FIRST), size=n)].tolist()
    last = np.array(LAST)[rng.integers(0, len(LAST), size=n)].tolist()
    dotted = (rng.random(n) < 0.8).tolist()
    suffix = rng.integers(10, 99, size=n).tolist()
    domain = np.array(DOMAINS)[rng.integers(0, len(DOMAINS), size=n)].tolist()
    tokens = [f"{v:012x}" for v in rng.integers(0, 2**48, size=n).tolist()]
    pick = _Picker(rng, n * 90 + 1000)
    origin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    end = origin + timedelta(days=days)
    mails: list[_Mail] = []
    conversations: list[MailConversation] = []
    marks = {"dropped_references": 0, "dropped_all_headers": 0, "auto_messages": 0}
    seq = 0

    def add(at: datetime, raw: str) -> None:
        nonlocal seq
        mails.append(_Mail(at, seq, raw))
        seq += 1

    for i, b in enumerate(which.tolist()):
        batch = batches[b]
        name = f"{first[i]} {last[i]}"
        local = f"{first[i]}.{last[i]}" if dotted[i] else f"{first[i]}{last[i]}{suffix[i]}"
        customer = f"{local}@{domain[i]}"
        display = f"{ACCENTED.get(first[i], first[i].title())} {last[i].title()}"
        subject, text, cancel = _compose(batch, pick, name)
        offset = pick.pick(OFFSETS)
        client = pick.pick(MAIL_CLIENTS)
        host = CUSTOMER_HOSTS.get(domain[i], "mail." + domain[i])
        at = origin + timedelta(seconds=int(day[i]) * 86400 + int(second[i]))
        root = f"{tokens[i]}.{i}@{host}"
        ids = [root]
        headerless: list[str] = []
        headers = [
            ("From", _address(display, customer)),
            ("To", f"Reelbox Support <{SUPPORT_ADDRESS}>"),
            ("Subject", subject),
            ("Date", _rfc2822(at, offset)),
            ("Message-ID", f"<{root}>"),
            ("X-Mailer", client),
        ]
        add(at, _render(headers, text, pick, quoted=None, html=0.08))
        if pick.chance(0.05):  # the helpdesk's automatic acknowledgement
            ack = f"ack.{i}@reelbox.example"
            ack_at = at + timedelta(seconds=30 + int(pick.u() * 60))
            add(
                ack_at,
                f"From: Reelbox Support <{SUPPORT_ADDRESS}>\nTo: {customer}\n"
                f"Subject: [Reelbox] We received your message: {subject}\n"
                f"Date: {_rfc2822(ack_at, 0)}\nMessage-ID: <{ack}>\n"
                f"In-Reply-To: <{root}>\nReferences: <{root}>\nAuto-Submitted: auto-replied\n"
                f'MIME-Version: 1.0\nContent-Type: text/plain; charset="utf-8"\n\n{AUTO_ACK}\n',
            )
            ids.append(ack)
            marks["auto_messages"] += 1
        kind = "complaint" if batch.kind == "complaint" else "other"
        answer_p = {"complaint": 0.85, "question": 0.9, "request": 0.85, "praise": 0.5}
        chain = [root]  # what a reply's References would carry
        prev_text, prev_who, prev_at = text, f"{display} <{customer}>", at
        turn = 0
        agent = pick.pick(AGENTS)
        p_next = answer_p[batch.kind]
        while pick.chance(p_next) and turn < 6:
            turn += 1
            agent_turn = turn % 2 == 1
            gap = (0.3 + pick.u() * 30) if agent_turn else (0.2 + pick.u() * 48)
            reply_at = prev_at + timedelta(hours=gap)
            if reply_at >= end:
                break
            base = f"Re: {subject}"
            if agent_turn:
                mid = f"reelbox.{i}.{turn}.{tokens[i][:6]}@reelbox.example"
                reply = f"{pick.pick(AGENT_REPLIES[batch.kind])}\n\n{agent}\nReelbox Support"
                who = _address(f"{agent} at Reelbox", SUPPORT_ADDRESS)
                headers = [
                    ("From", who),
                    ("To", _address(display, customer)),
                    ("Subject", base),
                    ("Date", _rfc2822(reply_at, 0)),
                    ("Message-ID", f"<{mid}>"),
                    ("In-Reply-To", f"<{chain[-1]}>"),
                    ("References", " ".join(f"<{m}>" for m in chain)),
                ]
                quoted = _quote(prev_text, prev_who, prev_at, outlook=False)
                add(reply_at, _render(headers, reply, pick, quoted=quoted, html=0.0))
                ids.append(mid)
                chain.append(mid)
                if pick.chance(0.015):  # the customer's out-of-office answers the agent
                    ooo = f"ooo.{i}.{turn}@{host}"
                    ooo_at = reply_at + timedelta(seconds=5 + int(pick.u() * 60))
                    note = pick.pick(OUT_OF_OFFICE).format(
                        day=(reply_at + timedelta(days=7)).strftime("%B %d"),
                        phone=pick.pick(PHONES),
                    )
                    add(
                        ooo_at,
                        f"From: {_address(display, customer)}\nTo: {SUPPORT_ADDRESS}\n"
                        f"Subject: Automatic reply: {base}\nDate: {_rfc2822(ooo_at, offset)}\n"
                        f"Message-ID: <{ooo}>\nIn-Reply-To: <{mid}>\n"
                        f"Auto-Submitted: auto-replied\nX-Autoreply: yes\nMIME-Version: 1.0\n"
                        f'Content-Type: text/plain; charset="utf-8"\n\n{note}\n',
                    )
                    ids.append(ooo)
                    marks["auto_messages"] += 1
                prev_text, prev_who = reply, f"{agent} at Reelbox <{SUPPORT_ADDRESS}>"
                p_next = 0.45 if turn == 1 else 0.25
            else:
                mid = f"{tokens[i]}.{i}.{turn}@{host}"
                reply = _fill(pick.pick(FOLLOWUPS[kind]), pick)
                if pick.chance(0.3):
                    reply = f"{reply}\n\n{pick.pick(SIGNOFFS)}\n{display}"
                roll = pick.u()
                headers = [
                    ("From", _address(display, customer)),
                    ("To", SUPPORT_ADDRESS),
                    ("Date", _rfc2822(reply_at, offset)),
                    ("Message-ID", f"<{mid}>"),
                    ("X-Mailer", client),
                ]
                if roll < 0.03:  # no headers and no "Re:": a new mail as far as anyone can tell
                    headers.insert(2, ("Subject", subject))
                    marks["dropped_all_headers"] += 1
                    headerless.append(mid)
                elif roll < 0.13:  # webmail on a phone: "Re:" kept, threading headers lost
                    headers.insert(2, ("Subject", pick.pick(REPLY_PREFIXES) + subject))
                    marks["dropped_all_headers"] += 1
                    headerless.append(mid)
                else:
                    headers.insert(2, ("Subject", pick.pick(REPLY_PREFIXES) + subject))
                    headers.append(("In-Reply-To", f"<{chain[-1]}>"))
                    if roll < 0.28:  # References dropped, In-Reply-To kept
                        marks["dropped_references"] += 1
                    else:
                        headers.append(("References", " ".join(f"<{m}>" for m in chain)))
                quoted = _quote(prev_text, prev_who, prev_at, outlook=pick.chance(0.3))
                add(reply_at, _render(headers, reply, pick, quoted=quoted, html=0.08))
                ids.append(mid)
                chain.append(mid)
                prev_text, prev_who = reply, f"{display} <{customer}>"
                p_next = 0.6
            prev_at = reply_at
        conversations.append(
            MailConversation(
                root_id=root,
                message_ids=tuple(ids),
                customer=customer,
                topic=batch.topic,
                kind=batch.kind,
                pool=batch.pool,
                created_at=at,
                subject=subject,
                cancel=cancel,
                headerless=tuple(headerless),
            )
        )
    # Machine mail on its own: bounces of answers to mistyped addresses and
    # auto-replies that name no message. Never a complaint, never a ticket that counts.
    n_auto = max(2, int(rng.binomial(max(n, 1), 0.004)))
    auto_at = np.sort(rng.integers(0, days * 86400, size=n_auto)).tolist()
    for k, offset_s in enumerate(auto_at):
        at = origin + timedelta(seconds=int(offset_s))
        mid = f"auto.{k}.{int(pick.u() * 1e12):x}@mx.reelbox.example"
        if k % 2 == 0:
            to = f"{pick.pick(FIRST)}.{pick.pick(LAST)}@exmaple.com"
            raw = _bounce(at, k, mid, to, pick.pick(COMPLAINT_SUBJECTS["pricing"]), pick)
            who = "MAILER-DAEMON@mx.reelbox.example"
        else:
            who = f"{pick.pick(FIRST)}.{pick.pick(LAST)}@example.net"
            raw = (
                f"From: {who}\nTo: {SUPPORT_ADDRESS}\nSubject: Out of Office\n"
                f"Date: {_rfc2822(at, 0)}\nMessage-ID: <{mid}>\nPrecedence: auto_reply\n"
                f'MIME-Version: 1.0\nContent-Type: text/plain; charset="utf-8"\n\n'
                f"{OUT_OF_OFFICE[1]}\n"
            )
        add(at, raw)
        marks["auto_messages"] += 1
        subject = "Undelivered Mail Returned to Sender" if k % 2 == 0 else "Out of Office"
        conversations.append(MailConversation(mid, (mid,), who, None, "auto", None, at, subject))
    return mails, conversations, marks


_FROM_LINE_RE = re.compile(r"^(>*From )", re.MULTILINE)


def _write_mbox(path: Path, mails: list[_Mail]) -> None:
    """mboxrd: a ``From `` line before each message, ``From `` in bodies escaped."""
    mails.sort(key=lambda m: (m.at, m.seq))
    chunks = []
    for mail in mails:
        stamp = mail.at.strftime("%a %b %d %H:%M:%S %Y")
        body = _FROM_LINE_RE.sub(r">\1", mail.raw)
        chunks.append(f"From MAILER-DAEMON {stamp}\n{body}\n")
    path.write_bytes("".join(chunks).encode("utf-8"))


def _mailbox_truth(
    path: Path,
    mails: list[_Mail],
    conversations: list[MailConversation],
    marks: dict[str, int],
    start: date,
    days: int,
) -> MailboxTruth:
    per_day: dict[str, list[int]] = {t: [0] * days for t in TOPICS}
    origin = datetime(start.year, start.month, start.day, tzinfo=UTC)
    for c in conversations:
        if c.kind == "complaint" and c.topic is not None:
            per_day[c.topic][(c.created_at - origin).days] += 1
    return MailboxTruth(
        path=path,
        conversations=tuple(conversations),
        messages=len(mails),
        thread_of={m: c.root_id for c in conversations for m in c.message_ids},
        complaints_per_day=per_day,
        **marks,
    )


def _events(start: date, days: int) -> tuple[PlantedEvent, ...]:
    def at(offset: int) -> date:
        return start + timedelta(days=offset)

    events = [
        PlantedEvent(
            "release-android-tv",
            "release-android-tv",
            "playback",
            at(ANDROID_TV),
            1.0,
            1,
            spike_expected=False,
            attributed=False,
        ),
        PlantedEvent(
            "profiles-removal",
            "profiles-removal",
            "profiles",
            at(PROFILES_OUT),
            5.0,
            7,
            spike_expected=True,
            attributed=True,
            reverted_by="profiles-kept",
        ),
        PlantedEvent(
            "release-search",
            "release-search",
            "content",
            at(SEARCH),
            1.0,
            1,
            spike_expected=False,
            attributed=False,
        ),
        PlantedEvent(
            "playback-incident",
            None,
            "playback",
            at(INCIDENT_DAY),
            # x6 for 36 hours spread over two calendar days.
            1 + (INCIDENT_FACTOR - 1) * (INCIDENT_HOURS[1] - INCIDENT_HOURS[0]) / 48,
            2,
            spike_expected=True,
            attributed=False,
        ),
        PlantedEvent(
            "price-rise",
            "price-rise",
            "pricing",
            at(PRICE_RISE),
            5.0,
            3,
            spike_expected=True,
            attributed=True,
        ),
        PlantedEvent(
            "dvd-split",
            "dvd-split",
            "dvd",
            at(DVD_SPLIT),
            3.85,
            21,
            spike_expected=True,
            attributed=True,
            reverted_by="dvd-split-reversed",
        ),
        PlantedEvent(
            "release-downloads",
            "release-downloads",
            "content",
            at(DOWNLOADS),
            1.0,
            1,
            spike_expected=False,
            attributed=False,
        ),
    ]
    return tuple(e for e in events if (e.onset - start).days + e.peak_days <= days)


def generate(
    out_dir: Path,
    *,
    seed: int = 7,
    start: date = date(2024, 11, 1),
    days: int = 730,
    volume: float = 1.0,
    mailbox: bool = True,
) -> DemoTruth:
    """Write ``tickets.csv``, ``changes.yaml`` and ``support.mbox`` for Reelbox into ``out_dir``.

    ``volume`` scales every count (1.0 is ~150-250 tickets a day); the story's
    dates move with ``start``. The same arguments always give the same bytes.
    """
    if days < 1 or volume <= 0:
        raise ValueError("days must be >= 1 and volume > 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = _batches(rng, start, days, volume)
    rows = _tickets(rng, batches, start, days)
    tickets_path = out_dir / "tickets.csv"
    with tickets_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    # A revert is always later than what it reverts, so a shorter demo never dangles one.
    changes = [c for c in _changes(start) if (c["announced_at"] - start).days < days]
    changes_path = out_dir / "changes.yaml"
    _write_changes(changes_path, changes)
    per_day: dict[str, list[int]] = {}
    for topic in TOPICS:
        days_of = [b.day for b in batches if b.topic == topic and b.kind == "complaint"]
        per_day[topic] = np.bincount(np.concatenate(days_of), minlength=days).tolist()
    mail_truth = None
    if mailbox:
        # Its own stream of random numbers: the tickets of a seed never change with the mail.
        mails, conversations, marks = _mailbox(
            np.random.default_rng([seed, MAIL_STREAM]), start, days, volume
        )
        mbox_path = out_dir / "support.mbox"
        _write_mbox(mbox_path, mails)
        mail_truth = _mailbox_truth(mbox_path, mails, conversations, marks, start, days)
    return DemoTruth(
        tickets_path=tickets_path,
        changes_path=changes_path,
        seed=seed,
        start=start,
        days=days,
        volume=volume,
        tickets=len(rows),
        events=_events(start, days),
        reverts={c["id"]: c["reverts"] for c in changes if c.get("reverts")},
        change_ids=tuple(c["id"] for c in changes),
        complaints_per_day=per_day,
        mailbox=mail_truth,
    )


def main() -> None:  # pragma: no cover
    """``python -m flows.demo_company OUT_DIR [VOLUME]``: write the demo data."""
    import sys
    import time as clock

    args = sys.argv[1:]
    began = clock.perf_counter()
    truth = generate(
        Path(args[0] if args else "demo/data"), volume=float(args[1]) if len(args) > 1 else 1.0
    )
    took = clock.perf_counter() - began
    print(f"{truth.tickets} tickets in {took:.1f} s -> {truth.tickets_path}")
    if truth.mailbox is not None:
        mail = truth.mailbox
        print(f"{len(mail.conversations)} conversations, {mail.messages} messages -> {mail.path}")


if __name__ == "__main__":  # pragma: no cover
    main()
