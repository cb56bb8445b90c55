"""The labeller's rules, one small frame per rule, plus its contract."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest

from transforms.labels import LABELLER_RULES_VERSION, label_tickets, labeller_version
from transforms.schema import TICKET_LABELS
from transforms.taxonomy import DEFAULT_TOPICS, Topic


def _frame(*bodies: str | None, subjects: list[str | None] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ticket_key": [f"t:{i}" for i in range(len(bodies))],
            "subject": subjects or [None] * len(bodies),
            "body": list(bodies),
        },
        schema={"ticket_key": pl.String, "subject": pl.String, "body": pl.String},
    )


def _one(body: str, subject: str | None = None, *, rules_only: bool = False) -> dict:
    """One labelled ticket. ``rules_only`` pins what a rule does: the n-gram
    layer may outvote a rule on one sentence, and whether the vote is better is
    measured on the labelled sets (benchmarks/), not pinned sentence by sentence."""
    frame = _frame(body, subjects=[subject])
    return label_tickets(frame, rules_only=rules_only).row(0, named=True)


def test_output_conforms_to_ticket_labels_contract() -> None:
    out = label_tickets(_frame("The price went up again, ridiculous.", "How do I add a profile?"))
    assert out.schema == pl.Schema(TICKET_LABELS)
    assert out["ticket_key"].to_list() == ["t:0", "t:1"]
    assert out["complaint_score"].is_between(0.0, 1.0).all()
    for topics, scores in zip(out["topics"], out["topic_scores"], strict=True):
        assert len(topics) == len(scores)
    assert out["labeller_version"].unique().to_list() == [labeller_version(DEFAULT_TOPICS)]


@pytest.mark.parametrize(
    "text",
    [
        "This is unacceptable, the app has not been working for three days.",
        "I'm not happy with the new price.",
        "Still waiting for a reply about my refund.",
        "I want a refund. Fix this.",
        "great, another price hike",
        "Es inaceptable, no funciona nada.",
        "Je suis vraiment déçue, c'est scandaleux.",
        "Das ist eine Frechheit, die App funktioniert nicht.",
    ],
)
def test_complaints_are_flagged_with_evidence(text: str) -> None:
    row = _one(text)
    assert row["is_complaint"], row
    assert row["complaint_score"] >= 0.5
    assert row["evidence"], "a complaint must say why"


@pytest.mark.parametrize(
    "text",
    [
        "How do I add a profile?",
        "Love the new app, the kids profile is great.",
        "Please update my address to 12 Oak Street.",
        "Not a problem, thanks for the quick reply.",
        "No complaints at all, just wanted to say thanks.",
        "Can you tell me when the new season is released?",
    ],
)
def test_questions_praise_and_requests_are_not_complaints(text: str) -> None:
    row = _one(text)
    assert not row["is_complaint"], row
    assert row["complaint_score"] < 0.5


def test_negation_flips_praise_but_not_negated_negatives() -> None:
    # the rules' negation handling (the n-gram vote overrules "not terrible at all")
    happy = _frame("I am happy with the service.", "I am not happy with the service.")
    out = label_tickets(happy, rules_only=True)
    assert out["is_complaint"].to_list() == [False, True]
    terrible = _frame("That was terrible.", "That was not terrible at all.")
    out = label_tickets(terrible, rules_only=True)
    assert out["is_complaint"].to_list() == [True, False]


def test_intensifier_raises_the_score() -> None:
    out = label_tickets(_frame("This is unacceptable.", "This is absolutely unacceptable."))
    plain, intense = out["complaint_score"].to_list()
    assert intense > plain >= 0.5
    assert "absolutely unacceptable" in out["evidence"][1].to_list()


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I want to cancel my account.", True),
        ("I'm cancelling today.", True),
        ("Switching to Hulu, I'm done.", True),
        ("Please close my account.", True),
        ("We will not be renewing.", True),
        ("Quiero darme de baja.", True),
        ("Je vais résilier mon abonnement.", True),
        ("Ich kündige zum Monatsende.", True),
        ("I don't want to cancel, I just want the buffering fixed.", False),
        ("I'm not going to cancel yet.", False),
        ("My DVD order was cancelled by mistake.", False),
        ("How do I add a profile for my daughter?", False),
    ],
)
def test_cancel_intent_and_its_negation(text: str, intent: bool) -> None:
    assert _one(text)["cancel_intent"] is intent


def test_cancel_intent_survives_an_earlier_negated_mention() -> None:
    row = _one("I didn't want to cancel, but if this isn't fixed by Friday I will cancel.")
    assert row["cancel_intent"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Hello, my bill went up again and I would like to know why.", "en"),
        ("Hola, me han cobrado dos veces este mes y nadie me responde.", "es"),
        ("Bonjour, je n'arrive pas à me connecter depuis hier soir.", "fr"),
        ("Hallo, ich kann mich seit gestern nicht mehr anmelden.", "de"),
    ],
)
def test_language(text: str, language: str) -> None:
    assert _one(text)["language"] == language


def test_topics_are_found_in_subject_and_body_and_scored() -> None:
    row = _one("The DVD envelope never arrived and I was charged again.", subject="Billing")
    assert set(row["topics"]) == {"dvd", "pricing"}
    scores = dict(zip(row["topics"], row["topic_scores"], strict=True))
    assert all(0.0 < s <= 1.0 for s in scores.values())
    assert scores["pricing"] > 0.5  # two cues ("billing", "charged") beat one


def test_null_subject_and_body_and_missing_columns() -> None:
    out = label_tickets(_frame(None, "", subjects=[None, None]))
    assert out["is_complaint"].to_list() == [False, False]
    assert out["cancel_intent"].to_list() == [False, False]
    assert out["topics"].to_list() == [[], []]
    assert out["language"].to_list() == ["und", "und"]
    only_key = label_tickets(pl.DataFrame({"ticket_key": ["a"]}))
    assert only_key.height == 1
    assert not only_key["is_complaint"][0]


def test_empty_frame() -> None:
    out = label_tickets(_frame())
    assert out.height == 0
    assert out.schema == pl.Schema(TICKET_LABELS)


def test_custom_taxonomy_and_version() -> None:
    wifi = Topic(name="wifi", description="Router trouble", phrases=("router", "wi-fi", "modem*"))
    out = label_tickets(_frame("My modems and the Wi-Fi router keep dropping."), topics=(wifi,))
    assert out["topics"].to_list() == [["wifi"]]
    assert out["labeller_version"][0] == labeller_version((wifi,))

    base = labeller_version(DEFAULT_TOPICS)
    assert base.startswith(LABELLER_RULES_VERSION)
    assert labeller_version(DEFAULT_TOPICS) == base  # deterministic
    changed = (
        dataclasses.replace(DEFAULT_TOPICS[0], phrases=(*DEFAULT_TOPICS[0].phrases, "surcharge")),
        *DEFAULT_TOPICS[1:],
    )
    assert labeller_version(changed) != base
    assert labeller_version(DEFAULT_TOPICS[:-1]) != base


def test_customer_text_cannot_break_the_regexes() -> None:
    nasty = "(.*) [a-z]+ \\b $1 ' OR 1=1; -- ¿¡ 😡😡 ***"
    out = label_tickets(_frame(nasty, "charged twice!!! (again)"))
    assert out.height == 2
    assert out["is_complaint"][1]


def test_default_taxonomy_names() -> None:
    assert [t.name for t in DEFAULT_TOPICS] == [
        "pricing",
        "dvd",
        "profiles",
        "playback",
        "account",
        "content",
    ]


# --- rules-4 -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "My statement shows three charges from you this month. Three!",
        "Outage during the season finale. Of course.",
        "The password reset link is expired every single time I click it.",
        "Someone in another country is using my account and you won't do anything about it.",
        "Thanks for the update that broke casting. Really appreciated. Not.",
        "How is a 25% increase justified when nothing has improved?",
    ],
)
def test_problems_stated_without_an_emotional_word_are_complaints(text: str) -> None:
    row = _one(text)
    assert row["is_complaint"], row
    assert row["evidence"]


def test_a_question_word_opening_the_subject_does_not_dampen_the_body() -> None:
    body = "I can't get in and the reset email never arrives."
    as_subject = _one(body, subject="What happened to my account")
    as_body_opening = _one("How do I get back in? " + body)
    assert as_subject["complaint_score"] > as_body_opening["complaint_score"]
    assert as_subject["is_complaint"]


def test_a_fixed_problem_is_not_a_complaint() -> None:
    broken = _one("The buffering issue from yesterday is back.")
    fixed = _one("The buffering issue from yesterday is fixed now, thanks!")
    assert broken["is_complaint"]
    assert not fixed["is_complaint"]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("I accidentally clicked cancel but I want to stay. Can you undo it?", False),
        ("My friend told me she was cancelling hers. Any loyalty perks?", False),
        ("Is cancellation instant? Asking for my mother, who's thinking about it.", False),
        ("I didn't cancel anything, yet my account says cancelled.", False),
        ("Every show I like gets cancelled after one season. I'm done with this service.", True),
        ("Después de este trato, me voy. Cancelen mi cuenta.", True),
        ("Nach so einer Behandlung bin ich weg. Schließen Sie mein Konto.", True),
    ],
)
def test_cancel_intent_rules_4(text: str, intent: bool) -> None:
    assert _one(text)["cancel_intent"] is intent


def test_polite_or_personal_cancellations_are_not_complaints() -> None:
    polite = _one("Please cancel my membership, we're moving abroad. Thanks for everything!")
    angry = _one("Cancel my membership. Your price hike is a joke.")
    assert polite["cancel_intent"]
    assert angry["cancel_intent"]
    assert not polite["is_complaint"]
    assert angry["is_complaint"]


@pytest.mark.parametrize(
    ("text", "wanted", "unwanted"),
    [
        ("Please change the e-mail address on my account.", "account", "dvd"),
        ("My book club wants to watch the same documentary.", "content", "playback"),
        ("Do you offer a student discount?", "pricing", "dvd"),
        ("Combien de profils puis-je créer ?", "profiles", "pricing"),
        ("Me bloquearon la cuenta sin motivo.", "account", "pricing"),
    ],
)
def test_topic_phrases_do_not_overmatch(text: str, wanted: str, unwanted: str) -> None:
    topics = _one(text)["topics"]
    assert wanted in topics
    assert unwanted not in topics


def test_row_order_and_cancel_flags_survive_the_cancellation_subset() -> None:
    bodies = [("Cancel my account now." if i % 7 == 0 else f"Hello {i}") for i in range(5_000)]
    out = label_tickets(_frame(*bodies))
    assert out["ticket_key"].to_list() == [f"t:{i}" for i in range(5_000)]
    assert out["cancel_intent"].to_list() == [i % 7 == 0 for i in range(5_000)]


# --- rules-5: implicit complaints and cancel-intent precision --------------------
# Sentences written per class of language, not copied from the evaluation sets.


@pytest.mark.parametrize(
    "text",
    [
        # money events
        "You billed my card after I cancelled in March.",
        "I got charged the premium rate but I'm on standard.",
        "Your billing page says I owe nothing but you took $16 anyway.",
        "I was promised a discount for 12 months, it lasted 2.",
        "I have emailed four times about this charge.",
        # fault reports: negated ability, failures, time since
        "The app won't open since the last update.",
        "Downloads aren't working on my tablet.",
        "Can't log in since Monday.",
        "I've been trying to update my card for a week and the page just errors out.",
        "This is the third time my DVD has arrived damaged.",
        "Search doesn't show anything anymore.",
        "Your new household rule locked my kid out at his dad's house.",
        # polite question-form fault reports
        "My profile picture and my list are gone, can you check what happened?",
        # sarcasm
        "Oh sure, make me sign in again on every device. Brilliant design.",
        # es / fr / de
        "Llevo una semana sin poder ver nada.",
        "Me cambiaron de plan sin preguntar.",
        "Les sous-titres ne s'affichent plus sur ma télé.",
        "Le disque est arrivé rayé, c'est la deuxième fois.",
        "Seit drei Tagen nur Ladekreis.",
        "Die DVD kam zerkratzt an.",
    ],
)
def test_implicit_complaints_are_flagged_with_evidence(text: str) -> None:
    row = _one(text, rules_only=True)
    assert row["is_complaint"], row
    assert row["evidence"], "a complaint must say why"


def test_evidence_quotes_the_implicit_phrase() -> None:
    row = _one("The TV app won't load since the update.")
    assert row["is_complaint"]
    assert "since the update" in row["evidence"]


@pytest.mark.parametrize(
    "text",
    [
        "Thanks for fixing the buffering so fast!",
        "Is the price going up next year? Just planning my budget.",
        "I don't hate the new layout, just getting used to it.",
        "Streaming has been flawless since the update, nice work.",
        "Could you tell me what error 5001 means? It only happened once and it's fine now.",
        "No estoy enfadado, solo quiero saber cuándo cambia el precio.",
    ],
)
def test_neutral_mentions_of_problem_words_are_not_complaints(text: str) -> None:
    row = _one(text)
    assert not row["is_complaint"], row


def test_sarcastic_praise_does_not_dampen() -> None:
    # the rules' sarcasm handling (the n-gram vote calls the sincere one a complaint)
    sincere = _one("Love the new profiles page.", rules_only=True)
    sarcastic = _one(
        "Oh great, another 'small adjustment' to my bill. Love that for me.", rules_only=True
    )
    assert not sincere["is_complaint"]
    assert sarcastic["is_complaint"]


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # hypothetical, policy, past, someone else's, not the subscription
        ("What happens to my downloads if I cancel?", False),
        ("Would cancelling now refund the rest of the month?", False),
        ("What's your cancellation policy for annual plans?", False),
        ("My mum cancelled her plan last year; can she rejoin?", False),
        ("Unsubscribe me from the newsletter please, I still want my membership.", False),
        ("¿Si cancelo ahora pierdo los días que ya pagué?", False),
        ("Est-ce que je perds mes profils si je résilie ?", False),
        ("Ich kündige nicht, aber die neue Regel nervt.", False),
        ("On m'a facturé le mois après ma résiliation.", False),
        # still intent
        ("I'm done with the DVD plan since you split it off. Close it.", True),
        ("If playback doesn't get fixed by Friday I'm cancelling.", True),
        ("Dejo el servicio, tres meses sin arreglar la app.", True),
        ("Je passe chez Canal+, au moins leur appli fonctionne.", True),
        ("Bitte das Abo zum Monatsende beenden.", True),
        ("Fine, whatever, I'll just go back to cable.", True),
    ],
)
def test_cancel_intent_rules_5(text: str, intent: bool) -> None:
    assert _one(text)["cancel_intent"] is intent


def test_a_conditional_threat_is_a_complaint_not_a_fixed_problem() -> None:
    row = _one("If playback doesn't get fixed by Friday I'm cancelling.")
    assert row["is_complaint"], row
    assert row["cancel_intent"]


def test_a_threat_to_switch_is_not_a_personal_move() -> None:
    switching = _one("Nothing new in months, I'm moving to another service.")
    moving = _one("Please cancel, I'm moving abroad. Thanks for everything!")
    assert switching["cancel_intent"]
    assert switching["is_complaint"]
    assert moving["cancel_intent"]
    assert not moving["is_complaint"]


def test_a_bare_statement_tips_a_weak_cue_or_reports_a_product_fault() -> None:
    bare = _one("Watched it in Spanish again.", rules_only=True)
    polite = _one("Hi, watched it in Spanish again. Thanks", rules_only=True)
    about_the_product = _one("My receipt shows Premium, my app shows Basic.", rules_only=True)
    asked = _one("My receipt shows Premium, does my app show Basic?", rules_only=True)
    plain = _one("Watched it last night.", rules_only=True)
    assert bare["is_complaint"], bare
    assert not polite["is_complaint"], polite
    assert about_the_product["is_complaint"], about_the_product
    assert not asked["is_complaint"], asked
    assert not plain["is_complaint"], plain


# --- rules-6 -------------------------------------------------------------------
# Each class below was missed (or wrongly flagged) by rules-5; the sentences are
# written for these tests, not copied from the evaluation sets.


@pytest.mark.parametrize(
    "text",
    [
        # a question that reports a fault: why + negation, in four languages
        "Why does the remote app never remember my volume?",
        "Warum gibt es bei den neuen Serien keine Originalfassung?",
        "¿Por qué la versión para la tele no trae subtítulos?",
        "Pourquoi la recherche ne trouve pas les films en VO ?",
        # an expectation broken
        "The receipt went to my old inbox even though I changed it weeks ago.",
        "Die Lieferung kam zurück, obwohl ich die Adresse doppelt geprüft habe.",
        # money that does not match
        "The statement shows 12.99 but my plan is the 8.99 one.",
        "Me aparecen tres cargos de ustedes este mes.",
        # a polite request to repair
        "The kids row shows a war film as its first title. Please fix that.",
        # something no longer there, in de/es/fr negation
        "Seit dem Umbau gibt es keine Warteschlange mehr auf der Startseite.",
        # going public
        "I'm writing a post about this on Reddit tonight.",
        # an angry emoji says it
        "Hi, the list page again 😡",
        # repeated attempts, and 'it is not my connection'
        "Ich habe den Router dreimal neu gestartet.",
        "No es mi conexión, en el móvil anda perfecto.",
        # a disputed claim
        "Hi, the letter says I supposedly never returned the disc.",
    ],
)
def test_rules_6_structural_complaints(text: str) -> None:
    row = _one(text, rules_only=True)
    assert row["is_complaint"], row
    assert row["evidence"], row


@pytest.mark.parametrize(
    "text",
    [
        # mock appreciation and scare quotes around a praise word
        "The menu takes ten seconds to open now. Truly visionary.",
        "So the 'upgrade' means the menu is slower. Ganz toll gemacht.",
        "Merci pour la 'nouveauté' de payer deux fois... pour vous.",
        "Love how the help page links to itself. Bold choice.",
        # praise words beside a real fault are not praise
        "Brilliant, the app updated and now crashes on start.",
    ],
)
def test_rules_6_sarcasm_and_praise_beside_a_fault(text: str) -> None:
    assert _one(text)["is_complaint"], _one(text)


@pytest.mark.parametrize(
    "text",
    [
        "Feature idea: a button to hide titles I've already watched on DVD.",
        "Idée : un mode nuit pour l'appli, ce serait pratique.",
        "No es queja, solo curiosidad: ¿cuántos perfiles puedo crear?",
        "Wir sind überhaupt nicht unzufrieden mit dem Dienst.",
        "Idea: a sleep timer that stops the app after one episode.",
        # a polite cancellation with a personal reason is a request, not a grievance
        "Ich will zum Monatsende kündigen, wir nutzen ab jetzt ein anderes Konto. Danke!",
    ],
)
def test_rules_6_suggestions_and_polite_requests_are_not_complaints(text: str) -> None:
    assert not _one(text)["is_complaint"], _one(text)


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        # leaving, said with a verb a few words before what is closed
        ("Please end the disc part of my membership.", True),
        ("Merci de clore mon abonnement à la fin du mois.", True),
        ("kuendigt das abo bitte sofort", True),
        ("That's it, I'm switching.", True),
        ("I'm letting my subscription lapse in December.", True),
        ("Solange das nicht geht, lasse ich das Abo auslaufen.", True),
        ("Noch ein Fehler und ich bin bei Lovefilm.", True),
        # not leaving: instead of, an order, after it happened, a job
        ("Can I pause the plan instead of cancelling it?", False),
        ("Kann ich das Abo pausieren statt es zu kündigen?", False),
        ("Please cancel the shipment of the next disc, I moved it by mistake.", False),
        ("You charged me again after cancelling in May.", False),
        ("Je quitte mon travail vendredi, je change l'adresse e-mail du compte.", False),
    ],
)
def test_cancel_intent_rules_6(text: str, intent: bool) -> None:
    assert _one(text)["cancel_intent"] is intent, _one(text)


@pytest.mark.parametrize(
    ("text", "wanted"),
    [
        ("Schon wieder eine Fehlermeldung beim Film.", "playback"),
        ("el servicio se cae por las noches", "playback"),
        ("I need to change the payment card on file.", "account"),
        ("Is there a dubbed version of this one?", "content"),
        ("La búsqueda de estrenos no funciona.", "content"),
    ],
)
def test_rules_6_topic_phrases(text: str, wanted: str) -> None:
    assert wanted in _one(text)["topics"], _one(text)
