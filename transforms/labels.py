"""Label tickets: complaint or not, topics, cancellation intent, language, evidence.

Why a lexicon and rules rather than a model: the labels feed alerts sent to
leadership, so every label must be explainable ("complaint because: 'absolutely
unacceptable', 'price hike'"), reproducible offline, versioned (a relabel after
a rules change keeps the series comparable) and fast enough to relabel the
whole warehouse in seconds. Every rule here is a regular expression compiled
once and run by Polars over the whole frame; nothing loops per ticket.

How the complaint score works (weights are in the tier tables below):

* text = lower-cased subject + body with accents stripped, so one lexicon
  covers "déçu"/"decu" and "Kündigung"/"kundigung";
* *neutralisers* are cut out first: negated negatives ("not a problem", "no
  complaints", "not bad") and negated cancellations ("I don't want to cancel");
* every remaining negative phrase adds its tier's weight; an intensifier in
  front of one ("absolutely unacceptable") adds more; threats to leave add;
* most complaints carry no emotional word at all: they state a fact that is a
  problem ("went from 17.99 to 22.99 and nobody told me", "won't load since
  the update", "third envelope arrived empty"). _IMPLICIT holds those as
  classes of language (negated ability, failure verbs, money taken or changed,
  broken promises, repeats and time since, deletions, their es/fr/de
  equivalents), each as strong as a _MEDIUM word;
* _STRUCTURAL (rules-6) holds classes of *sentence* rather than phrases, as
  strong as a _MEDIUM word: a question that reports a fault ("why ... not",
  "warum ... nicht", "por qué ... no", "pourquoi ... pas"), an expectation
  broken ("even though I updated it", "obwohl"), money that does not match
  ("charged 15.98 but my plan is 7.99", "tres cargos"), a request to repair
  ("please fix that", "bitte korrigieren"), something no longer there in
  de/es/fr negation ("kein ... mehr", "ya no hay", "n'y a plus de"), repeated
  attempts ("dreimal", "tres veces"), "it's not my router", a disputed claim
  ("supposedly", "soi-disant"), going public, and angry emoji;
* sarcasm ("oh great, another 'small adjustment'. Love that for me", mock
  appreciation as a sentence of its own: "Very touching.") adds, and the
  praise words inside a sarcastic ticket, or beside a real fault, no longer
  count as praise; a word in scare quotes ('valued') is a weak cue;
* a how-to question, a suggestion ("Feature idea: ..."), a polite request or
  praise subtracts a little, so "how do
  I add a profile?" or "love the new app" stay below the threshold while a
  question with a real grievance in it does not; asking for a fault to be
  looked into ("could you look into it?", "can I get a replacement?") is a
  weak cue of its own, so a polite fault report is not dampened away. Only
  the *body's* opening counts as a question: a subject like "What happened to
  my account" is a headline. Asking how to leave, or asking politely ("please
  close my account, thanks"), counts half as much as saying you leave;
* a report that the problem is over ("fixed now, thanks") subtracts more;
* score = raw / (raw + 1), a complaint at score >= 0.5 (raw >= 1).

Cancellation intent: the cancellation lexicon, minus negated, reported,
past or hypothetical cancellations ("I don't want to cancel", "my account says
cancelled", "my wife cancelled hers", "what happens if I cancel?", "si je
résilie", "your cancellation policy", cancelling an order or the marketing
emails), vetoed when the writer is staying or asking for someone else. These
rules are full of common words, so they run only on the few tickets that
mention leaving at all.

Measured honestly (benchmarks/labels_eval.py): rules-4 was tuned on the whole
of labels_eval.jsonl and scored once on labels_holdout.jsonl. rules-5 was
written from both, each round of rules from one half of the errors and checked
on the other half, and scored once on labels_holdout2.jsonl (complaint F1
0.805, cancel precision 0.885). rules-6 was written from labels_holdout2.jsonl:
round A from its even lines (complaint F1 on the odd lines 0.806 -> 0.844),
round B from its odd lines (even lines 0.938 -> 0.951). It is scored once on
labels_holdout3.jsonl, which no rule writer has read (complaint F1 0.806,
cancel precision 0.890).

rules-6+lm-2 adds a learned layer (transforms/label_model.py), because the
rules fit their authors: phrases written from one set carried over little to
the next writer. A logistic regression over word and character n-grams
overrules the rules' complaint verdict only when it is sure, may veto a
cancellation the rules found, and may add one where the rules saw no
cancellation phrase. Scored once on
labels_holdout4.jsonl, which no rule writer or model trainer has read:
complaint P/R/F1 0.914 / 0.823 / 0.866 (rules-6 alone 0.835 / 0.718 / 0.772),
cancellation P/R 0.908 / 0.657 (0.865 / 0.610). Quote that figure, not the
tuning ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence

import polars as pl

from transforms.label_model import LabelModel, default_model, score_texts
from transforms.schema import TICKET_LABELS, conform
from transforms.taxonomy import DEFAULT_TOPICS, Topic

# Bump when any rule, weight or lexicon below changes: labels in the warehouse
# carry it, so a relabel can find what an older ruleset produced.
RULES_VERSION = "rules-6"
# The rules plus the n-gram layer of transforms.label_model (its weights file
# names its own version, and its hash is part of labeller_version()).
LABELLER_RULES_VERSION = "rules-6+lm-2"

COMPLAINT_THRESHOLD = 0.5
_LANG_WINDOW = 600  # characters: stop words in the opening lines are enough

# --- lexicons -----------------------------------------------------------------
# Regex fragments over normalised text (lower case, no accents, straight
# apostrophes). ``'?`` lets "dont"/"don't" both match: customers skip them.

_NEG = r"(?:not|never|no|nothing|don'?t|doesn'?t|didn'?t|isn'?t|wasn'?t|aren'?t|without)"

# Said with real anger or disgust: one of these alone makes a complaint.
_STRONG = [
    r"unacceptable",
    r"ridiculous",
    r"rediculous",
    r"ridiculously",
    r"outrageous",
    r"outraged",
    r"disgusting",
    r"disgusted",
    r"disgrace(?:ful)?",
    r"appalling",
    r"appalled",
    r"terrible",
    r"terribly",
    r"horrible",
    r"horrendous",
    r"awful",
    r"atrocious",
    r"worst",
    r"pathetic",
    r"scam(?:med|mers?)?",
    r"rip[- ]?off",
    r"ripping (?:us|me|people|customers) off",
    r"robbery",
    r"fed up",
    r"sick (?:and tired )?of",
    r"furious",
    r"livid",
    r"shameful",
    r"shame on you",
    r"insult(?:ing)?",
    r"greed(?:y)?",
    r"(?:is|what) a joke",
    r"absurd",
    r"useless",
    r"garbage",
    r"rubbish",
    r"price (?:hike|gouging)s?",
    r"gouging",
    r"thanks for nothing",
    r"cash grab",
    r"money grab",
    r"unbelievable",
    r"incompetent",
    r"fraud(?:ulent)?",
    r"nightmare",
    r"wtf",
    # rhetorical questions: a grievance even though they start with "how"
    r"how (?:is|are|can|could) (?:[^ ]+ ){1,4}(?:fair|justified|acceptable|ok|okay|legal)",
    r"trash",
    r"junk",
    r"crap(?:py)?",
    r"rude(?:ly)?",
    r"disaster",
    r"(?:so |sick and )?tired of",
    r"que desastre",
    r"desastros[oa]",
    r"bazar",
    r"chaos",
    # es
    r"inaceptable",
    r"ridiculo",
    r"vergonzoso",
    r"verguenza",
    r"pesimo",
    r"estafa",
    r"harto",
    r"harta",
    r"indignante",
    r"un robo",
    r"abusivo",
    r"abuso",
    # fr
    r"inacceptable",
    r"inadmissible",
    r"scandal(?:eux|euse)",
    r"honteu(?:x|se)",
    r"lamentable",
    r"arnaque",
    r"ras le bol",
    r"(?:j'?en ai|en avoir) marre",
    r"n'?importe quoi",
    r"nul(?:le)?",
    r"inadmissible",
    # de
    r"inakzeptabel",
    r"unverschamt",
    r"frechheit",
    r"katastroph\w*",
    r"abzocke",
    r"skandal(?:os)?",
    r"lacherlich",
    r"miserabel",
    r"unmoglich",
    r"schrecklich",
    r"unzumutbar",
]

# A clear negative experience, demand or grievance.
_MEDIUM = [
    r"disappoint(?:ed|ing|ment)",
    r"frustrat(?:ed|ing|ion)",
    r"annoy(?:ed|ing)",
    r"angry",
    r"upset",
    r"unhappy",
    r"dissatisfied",
    r"unsatisfied",
    r"irritat(?:ed|ing)",
    r"infuriat(?:ed|ing)",
    r"complain(?:t|ts|ing)?",
    r"not (?:\w+ )?(?:happy|satisfied|pleased|impressed|acceptable|ok|okay|fair|right|"
    r"thrilled|amused)",
    r"(?:isn'?t|wasn'?t|is not|was not|not) (?:\w+ )?(?:working|fair|acceptable|right)",
    r"(?:doesn'?t|don'?t|didn'?t|does not|do not|did not|won'?t|will not|wont) (?:\w+ )?work",
    r"(?:stopped|stops|quit) working",
    r"no longer (?:works?|working|available|included|possible|able)",
    r"(?:won'?t|wont|will not|doesn'?t|does not|can'?t|cannot|can not|unable to) "
    r"(?:even )?(?:play|load|stream|start|open|log ?in|sign ?in|access|watch|connect|get in)",
    r"still (?:waiting|haven'?t|hasn'?t|have not|has not|not|no|broken|nothing|charging)",
    r"no (?:response|reply|answer|one (?:has )?(?:replied|answered|helped))",
    r"nobody (?:has )?(?:replied|responded|answered|helped|cares)",
    r"never (?:arrived|received|came|got|showed up|answered|replied)",
    r"(?:hasn'?t|haven'?t|has not|have not|didn'?t|did not) "
    r"(?:arrive|arrived|come|shown up|received)",
    r"keeps? (?:on )?(?:buffering|crashing|freezing|logging me out|kicking me|failing|"
    r"charging|happening|stopping|dropping)",
    r"constant(?:ly)? (?:buffering|crash\w*|freez\w*|error\w*|problems?|issues?)",
    r"crash(?:es|ed|ing)",
    r"freez(?:es|ing)",
    r"broken",
    r"(?:fix|sort) (?:this|it|your)",
    r"(?:i|we) (?:want|demand|expect|need) (?:a |my |our |an? full )?(?:refund|money back|credit)",
    r"(?:give|send) me (?:a |my )?(?:refund|money)",
    r"refund me",
    r"money back",
    r"charged (?:me )?(?:twice|two times|double|again|without)",
    r"double[- ]charged",
    r"overcharg(?:ed|ing)",
    r"without (?:my |any )?(?:consent|permission|warning|notice|asking)",
    r"(?:went|gone|going|goes|go) up again",
    r"another (?:price )?(?:increase|rise|hike)",
    r"(?:raised|raising|hiked|jacked up|bumped up|increased) "
    r"(?:the |my |your |our )?(?:price|prices|bill|fee|rate)",
    r"price (?:increase|rise)s?",
    r"(?:too|so|way too|more) expensive",
    r"overpriced",
    r"not worth",
    r"waste of (?:money|time)",
    r"makes no sense",
    r"forced to",
    r"(?:took|taking|take) away",
    r"(?:this is|for) the (?:second|third|fourth|fifth|\d+(?:st|nd|rd|th)) time",
    r"how many times",
    r"(?:what a|such a|total) (?:mess|joke|disaster|shambles)",
    r"(?:poor|bad|lousy|awful|crap|crappy|shoddy) (?:service|quality|support|experience|picture|"
    r"customer service|app|streaming)",
    r"(?:worse|worst) than",
    r"(?:i'?m|i am|we'?re|we are) (?:very |so |really )?(?:confused|shocked|stunned)",
    r"why (?:on earth |the hell )?(?:did|do|would|are|is|was|should|am|have|has)"
    r" (?:you|i|my|we|it|this|the)",
    r"what happened to",
    # problem states: a customer reporting one is unhappy even without an adjective
    r"stuck",
    r"froze|frozen",
    r"freezes?",
    r"buffer(?:s|ing|ed)",
    r"wiped",
    r"(?:deleted|erased|disappeared|vanished|gone|missing|lost)",
    r"(?:damaged|cracked|scratched|smashed|empty)",
    r"unusable|unwatchable|unbearable|impossible",
    r"laggy|choppy|stutter\w*|glitch\w*|pixelated|blurry",
    r"out of sync|black screen|spinning|looping",
    r"drops? out|cuts? out|stops? (?:every|after|randomly|playing)",
    r"(?:hate|hated|hates|dislike)",
    r"hassle|(?:a |such a |what a )?mess|wasted|insane|crazy|nonsense",
    r"slap in the face|taken for granted|feels? like a trap|sneaky|lied to",
    r"dissatisfaction",
    r"gave up|give up|i was not|lol no|nope",
    r"won'?t let me|wouldn'?t let me",
    r"(?:couldn'?t|could not|can'?t|cannot) (?:even )?"
    r"(?:stream|watch|log|get|sign|play|use|access)",
    r"kicked (?:me|us|my \w+|her|him|them) (?:off|out)",
    r"logged (?:me |us )?out",
    r"(?:nobody|no one|no-one|never) (?:even )?(?:told|warned|informed|notified|asked|agreed)",
    r"(?:didn'?t|did not|without) (?:even )?(?:warn|tell|notify|inform|ask)\w*",
    r"without (?:any |an? )?(?:explanation|reason|notice|warning)",
    r"never agreed",
    r"(?:stopped|stop) (?:arriving|coming|working|loading|playing)",
    r"(?:doubled|tripled|three times|twice)",
    r"(?:took|taken|taking|take) (?:money|my money|payment)",
    r"(?:pay|paying|charged|charging) (?:\w+ )?(?:more|extra)",
    r"(?:higher|fewer|less|worse)",
    r"(?:going|went|gone|goes|creeping|creep) up",
    r"(?:raise|raised|raising|increase|increased|increasing|hike|hiked) (?:\w+ )?"
    r"(?:price|prices|bill|fee|fees|rate|subscription)",
    r"(?:price|prices|bill|fee|fees|rate) (?:change|increase|rise|hike|jump)\w*",
    r"(?:removed|taken off|taking off|took off|pulled|got rid of)",
    r"used to (?:be|have|love|include)",
    r"(?:keeps|you keep|it keep) (?:on )?\w+ing",
    r"nothing (?:left|on it|to watch|works|loads|plays|happens)",
    r"(?:doesn'?t|does not) (?:feel|seem|make)",
    r"not (?:\w+ )?(?:user friendly|cool|normal|good enough|worth)",
    r"paid (?:\w+ ){0,4}(?:and|but) (?:got|get|received) nothing",
    r"thanks a lot(?:\.|$)",
    r"(?:i |we )?expect(?:ed)? better|what (?:are|were) you thinking|timed out",
    r"(?:does not|doesn'?t|don'?t|do not|did not|didn'?t) (?:match|recogni[sz]e|answer)",
    r"(?:so|too|very|really) slow|never available|hacked",
    r"(?:is|are|was|were) (?:so |really |very |getting )?(?:poor|bad|awful|slow|terrible|worse)",
    # es
    r"muy mal|fatal|peor|una pena|no es justo|no se puede|nunca llega\w*|rayad[oa]",
    r"nadie (?:me |nos )?(?:contesta|responde|avis\w*|ayuda)",
    r"gracias por nada|otra subida|esperando|ya no|no puedo|desincronizad[oa]|vaci[oa]",
    r"cobrar por|pago mas|quitad[oa]s?|quitaron|han quitado|increible|se cierra|no sirve",
    # fr
    r"impossible|refuse|cass[ee]e?s?|pire|vide|merci pour rien|encore une hausse|galere",
    r"sans (?:aucune |la moindre )?explication|pas (?:du tout )?(?:content|juste|normal)",
    r"plante|decales?|non recue?|insupportable|retire\w*|je paie plus|incroyable|inutilisable",
    r"n'?arrive (?:pas|plus)|je ne (?:peux|peut) (?:pas|plus)",
    # de
    r"nase voll|abgelehnt|zerbrochen|kaputt|leer|ohne (?:jede |eine )?erklarung",
    r"(?:nicht|nie) (?:\w+ )?(?:zufrieden|fair|akzeptabel|in ordnung)|uberhaupt nicht",
    r"hangt|versetzt|unbrauchbar|sturzt (?:\w+ )?ab|seit wochen|danke fur nichts|schon wieder",
    r"unglaublich|unertraglich|entfernt|zahle (?:ich )?(?:jetzt )?mehr|komme (?:\w+ )?nicht",
    r"kann (?:mich |ich )?(?:\w+ )?nicht",
    r"unfair",
    # problem reports without an emotional word (rules-4)
    r"every (?:single )?time",
    r"each time",
    r"(?:never|doesn'?t|don'?t|does not|do not) (?:ever )?(?:arrives?|comes?|shows? up|seal)",
    r"expired",
    r"outages?",
    r"(?:is|was|been|went|goes|keeps going) down",
    r"something went wrong",
    r"blocked",
    r"suspended",
    r"merged",
    r"mixed up",
    r"too many (?:screens|devices|streams)",
    r"upsetting",
    r"exhausting",
    r"too (?:high|much|steep)",
    r"(?:isn'?t|is not|aren'?t|are not|wasn'?t|was not) (?:\w+ )?"
    r"(?:user friendly|fair|good|ok|okay|acceptable|worth|right|justified)",
    r"(?:don'?t|do not) think (?:\w+ ){0,5}(?:fair|right|ok|okay|acceptable|worth)",
    r"what am i paying for|what'?s the point|point of paying",
    r"\d+ ?% (?:more|increase|hike|rise|jump|price)",
    r"(?:three|two|four|multiple|several|\d) (?:separate |different )?charges",
    r"(?:charged|billed|debited|took money|taken money) (?:\w+ ){0,4}"
    r"(?:after|even though|although|despite|when) (?:i|we)",
    r"(?:charged|billed) (?:\w+ )?on an account",
    r"not what (?:\w+ ){0,3}means|that'?s not what",
    r"still (?:shows?|showing|says|listed|marked|appears)",
    r"nothing (?:has )?(?:shipped|arrived|changed)",
    r"(?:won'?t|will not|doesn'?t|don'?t) do anything",
    r"(?:someone|somebody|strangers?) (?:\w+ ){0,5}(?:my account|my profile)",
    r"closed the chat|hung up",
    r"copy[- ]?paste",
    r"(?:nobody|no one) (?:\w+ )?reads",
    r"fall(?:s|ing)? out",
    r"(?:i )?don'?t understand why",
    r"making it (?:\w+ )?hard",
    r"what(?: i|')?s going on|what is going on",
    r"who (?:thought|decided) (?:this|that)",
    r"refund (?:the difference|me|my money|it|us)",
    # es
    r"cobr\w* (?:\w+ )?dos veces",
    r"carisim[oa]",
    r"se cortan?",
    r"todavia aparece|sigue apareciendo",
    r"devuelvan (?:el|mi) dinero|que me devuelvan",
    r"no tiene sentido",
    r"sin motivo",
    # fr
    r"pirate",
    r"personne ne (?:m'?aide|me repond|repond)",
    r"(?:veux|rendez-moi) mon argent",
    r"aucun sens",
    r"depuis des semaines",
    # de
    r"gehackt",
    r"niemand (?:hilft|antwortet|meldet sich)",
    r"umstandlich",
    r"schlecht(?:er)?",
    r"keinen sinn",
    r"(?:will|mochte) mein geld",
    r"es gibt nichts mehr",
    r"hidden fees?",
    r"misleading",
    r"lied",
    r"no warning",
    # es
    r"decepcion(?:ado|ada|ante)",
    r"molest(?:o|a)",
    r"enfadad(?:o|a)",
    r"no funciona",
    r"dej(?:o|a) de funcionar",
    r"sigue sin",
    r"todavia (?:no|sin|espero)",
    r"(?:quiero|exijo) (?:un |el |mi )?(?:reembolso|dinero)",
    r"(?:me )?(?:han )?cobrad(?:o|os) (?:dos veces|de mas|doble)",
    r"(?:mas|muy|demasiado) caro",
    r"subi(?:da|eron|do) (?:el |los )?precio",
    r"queja",
    r"no (?:me )?(?:responden|contestan|carga)",
    r"un desastre",
    r"injust(?:o|a)",
    # fr
    r"decu(?:e|s)?",
    r"mecontent(?:e|s)?",
    r"pas content(?:e)?",
    r"(?:ne )?(?:fonctionne|marche) (?:plus|pas)",
    r"toujours pas",
    r"toujours rien",
    r"(?:je veux|j'?exige) (?:un |etre |mon )?rembours\w*",
    r"(?:preleve|facture)s? (?:deux fois|en double)",
    r"(?:plus|trop) cher",
    r"augmentation",
    r"hausse (?:de|du|des)",
    r"plainte",
    r"enerve(?:e)?",
    r"inacceptable",
    r"aucune reponse",
    r"injuste",
    # de
    r"enttausch(?:t|end)",
    r"verarger(?:t|lich)",
    r"(?:funktioniert|geht|lauft|klappt) (?:\w+ ){0,5}?(?:nicht|nie)",
    r"immer noch (?:nicht|kein\w*)",
    r"(?:erstattung|geld zuruck)",
    r"doppelt (?:abgebucht|berechnet)",
    r"(?:zu|viel zu) teuer",
    r"teurer",
    r"preiserhohung",
    r"beschwerde",
    r"keine antwort",
    r"argerlich",
    r"sauer",
    r"unfair",
]

# Implicit complaints (rules-5): a fact that is a problem, stated without an
# emotional word. Same weight as _MEDIUM, kept in a second regex because one
# alternation of both lists outgrows the regex engine's lazy-DFA cache and runs
# 40x slower (measured: 8.3 s against 0.2 s per 100,000 tickets). Written in
# rounds, each from one source of errors and checked on another: round 1 from
# the even lines of labels_holdout.jsonl, round 2 from its odd lines, rounds 3-4
# from batches of sentences written per class before any rule for them existed.
_IMPLICIT = [
    # fault reports: a thing that should work, negated or failing
    r"(?:won'?t|wont|will not|doesn'?t|does not|can'?t|cannot|can not|unable to|couldn'?t|"
    r"could not) (?:even |seem to )?(?:install|update|download|sync|pair|cast|connect|"
    r"save|respond|finish|resume|load|recogni[sz]e)",
    r"(?:aren'?t|weren'?t|are not|were not) (?:\w+ )?(?:working|loading|playing|arriving)",
    r"(?:download|payment|update|install(?:ation)?|upload|login|log ?in|sign[- ]?in|sync|cast"
    r"|card|transaction)s? (?:has |have |keeps? |keep )?fail(?:ed|s|ing)",
    r"failed to|fails to|keeps? failing",
    r"(?:since|after) (?:the |your |this |last )?(?:\w+ )?(?:update|upgrade|redesign|change)",
    r"(?:billing|payment|account) (?:error|mistake)",
    r"(?:is|are|was|were|all|completely|totally) wrong|wrong (?:disc|dvd|item|amount|charge|"
    r"plan|title|movie|film|one|language|price|account|card|address|envelope)",
    r"(?:was|were|is|are) supposed to",
    r"(?:don'?t|do not) (?:even )?(?:know|recogni[sz]e) what (?:this|that|it)",
    r"not supported|no longer supported|anymore\?",
    r"nothing (?:new )?worth",
    r"why (?:on earth )?(?:can|can'?t|won'?t|doesn'?t|don'?t|isn'?t|aren'?t|wasn'?t|"
    r"were|must|did) (?:i|we|you|it|they|my|the|this|there)",
    r"why (?:do |am |would |should )?(?:i|we) (?:still )?(?:pay|paying|bother)",
    r"not sure why (?:i|we) (?:still )?(?:pay|bother)",
    r"(?:nobody|no one|no-one) (?:\w+ ){0,3}(?:reads|listens|cares)",
    # money events: charged for what one does not have, amounts taken
    r"(?:charged|chargd|billed|debited) (?:\w+ ){0,4}(?:but|and|when|while) (?:i|we) (?:only )?"
    r"(?:have|had|am|was|never|didn'?t|don'?t|cancel\w*)|(?:charged|chargd|billed|debited) "
    r"(?:\w+ ){0,4}(?:but|when|while) (?:i'?m|we'?re|i am|we are) (?:only )?on",
    r"(?:you|they) (?:took|take|charged|billed|debited) (?:me )?(?:\$|eur|usd|gbp)?\d+",
    # es
    r"sin poder",
    r"llevo (?:una|un|dos|tres|\d+|varias|varios) (?:semanas?|dias?|mes(?:es)?|horas?)",
    r"se queda (?:cargando|colgad[oa]|pillad[oa]|en negro|congelad[oa])",
    r"no entiendo (?:nada|por que|porque)",
    r"(?:es )?un lio",
    r"equivocad[oa]s?",
    r"sin que (?:\w+ ){0,2}(?:arregl\w*|solucion\w*|respond\w*|funcion\w*)",
    r"no (?:me )?deja",
    r"sigue igual",
    # fr
    r"mauvais(?:e|es)?",
    r"non mais",
    r"c'?est dommage",
    r"n'?y a plus",
    r"plus rien",
    r"quelqu'?un (?:\w+ ){0,2}(?:connecte|utilise|accede|change)",
    r"(?:payer|paye|paie|facture) (?:\w+ )?en plus",
    r"depuis (?:des|\d+|deux|trois|plusieurs|une|un) (?:jours?|semaines?|mois|heures?)",
    r"ne (?:se )?(?:charge|s'?ouvre|s'?affiche|repond|lance|demarre|lit) (?:plus|pas|jamais)",
    # de
    r"zumutung",
    r"seit (?:tagen|wochen|monaten|stunden|zwei|drei|vier|\d{1,3}|einer|einem)",
    r"(?:antwortet|reagiert|ladt|startet|spielt|offnet) (?:\w+ ){0,3}?(?:nicht|nie)",
    r"kein(?:e|en)? \w+ (?:lauft|geht|funktioniert|ladt)",
    r"kaum noch",
    r"verschwunden",
    r"falsch(?:e|en|er|es)?",
    r"ladekreis",
    r"(?:zufrieden|glucklich) (?:bin|sind) (?:ich|wir) (?:\w+ ){0,8}nicht",
    # round 2, written from the odd half and checked on the even half
    # broken promises and unauthorised money events
    r"(?:you|they|promo|offer|ad|advert|website|site|deal|agent|rep) (?:\w+ )?promised",
    r"(?:promo|offer|ad|advert|website|site|deal|email) (?:said|says|stated)",
    r"(?:didn'?t|did not|never) authori[sz]e|unauthori[sz]ed|without (?:my )?authori[sz]ation",
    r"reverse (?:it|this|that|the charge)",
    r"(?:\d+|two|three|four|five|ten|twenty) (?:bucks|dollars|euros|pounds|quid) more",
    r"(?:got|gets|getting|became|becomes) (?:even )?(?:smaller|worse|shorter|thinner|smaller)",
    r"(?:please )?reconsider",
    r"(?:really |is |are |it'?s )?hurting",
    r"(?:i|we) pay (?:for (?:this|it|that)|good money)",
    # repeats and time since
    r"(?:second|third|fourth|fifth|sixth|\d+(?:nd|rd|th)) (?:time|email|message|call|request|"
    r"attempt)",
    r"in a row",
    r"(?:stream|app|player|video|connection|playback|wifi|it) (?:just )?(?:died|dies|dying|"
    r"gave out|gives out)",
    r"(?:is (?:this|that|it)|what) (?:some )?(?:kind of )?a joke",
    r"ruin(?:ed|s|ing)?",
    r"disappear(?:s|ing)?",
    r"boring",
    r"dealbreaker|deal breaker",
    r"where (?:is|are) (?:my|our|the) (?:refund|money|order|disc|dvd|package|credit|reply)",
    r"not anymore[.!]|used to (?:recommend|like|enjoy|trust)",
    r"(?:one|1|zero|0|no) stars?[.!]",
    r"(?:forgets|forgot|loses|lost|resets|reset) (?:my|our) (?:place|progress|position|settings|"
    r"history|list|watchlist|queue)",
    r"why is there no|why isn'?t there",
    r"(?:need|want) to (?:talk|speak) to (?:a |an )?(?:human|real person|person|manager|"
    r"supervisor)",
    r"nothing (?:ever )?(?:changes|gets fixed|improves)",
    r"said no (?:\w+ )?(?:one|customer|user|body|subscriber) ever",
    r"(?:fine|ok|okay),? whatever",
    r"at least (?:they|their|i|we|the other|my old|that one|it works)",
    # es
    r"sin (?:previo )?avis(?:ar|o)",
    r"(?:han |ha )?borr(?:ado|aron|o)",
    r"perdi(?:o|mos|eron)? (?:todo|todos|todas|mi|su|el|la|los|las)",
    r"grieta|roto|rota|rotos",
    r"imposible",
    r"pagar (?:\w+ )?mas",
    r"alguien (?:\w+ ){0,2}(?:entro|accedio|uso|cambio|ha entrado)",
    r"siguen? (?:diciendo|sin|cobrando)",
    r"hace (?:dos|tres|cuatro|varias|\d+) (?:semanas|dias|meses)",
    r"no (?:lo |la )?(?:han |he |hemos )?recib(?:ido|ieron|i)",
    r"(?:esta |otra vez |de nuevo )?caid[oa]",
    r"me canse|estoy cansad[oa]|estamos cansad[oa]s",
    # fr
    r"panne",
    r"remboursez",
    r"(?:a |ont )?disparu\w*",
    r"(?:apres|depuis) (?:la |cette )?(?:derniere )?mise a jour",
    r"au moins (?:leur|eux|ils|chez)",
    r"sans (?:prevenir|avertissement|preavis)",
    # de
    r"sturzt (?:\w+ ){0,4}ab",
    r"jemand (?:\w+ ){0,4}(?:eingeloggt|angemeldet|zugegriffen|benutzt)",
    r"(?:nicht|nie) (?:erhalten|angekommen|bekommen)",
    r"immer noch (?:\w+ ){0,2}nicht",
    r"(?:fast|gar|so gut wie) nichts mehr",
    r"(?:nach|seit) dem (?:letzten )?update",
    r"vor (?:zwei|drei|vier|funf|zehn|\d+) (?:tagen|wochen|monaten)",
    r"ohne (?:vorwarnung|ankundigung|zu fragen|nachfrage)",
    r"(?:wenigstens|zumindest) (?:deren|die|ihre)",
    # round 3, from sentences written per class before any rule for them existed
    r"locked (?:me|us|him|her|them|my \w+) out|(?:got|get|been|was|am|keep getting) locked out",
    r"(?:is this|this is|that'?s) how you treat",
    r"(?:doesn'?t|does not|isn'?t|is not) (?:\w+ ){0,3}anymore",
    r"no (?:se )?(?:abre|carga|reproduce|conecta|inicia|arranca)",
    r"(?:desde|tras|despues de) (?:la|esta) (?:ultima )?actualizacion",
    r"(?:segunda|tercera|cuarta) vez|(?:deuxieme|troisieme|quatrieme) fois|zum (?:zweiten|dritten|"
    r"vierten) mal",
    r"rayee?s?|zerkratzt|beschadigt|abime",
    r"(?:zweimal|doppelt|zu viel) (?:\w+ )?(?:belastet|abgebucht|berechnet)",
    r"(?:facture|preleve|cobrad[oa]|cobraron|berechnet|abgebucht)\w* (?:\w+ ){0,4}"
    r"(?:apres|despues de|nach) (?:ma|mi|la|meiner|der) (?:resiliation|baja|cancelacion|kundigung)",
    # round 4: the same classes again, from a second batch of such sentences
    r"(?:emailed|called|asked|written|wrote|contacted|messaged|tried|chatted|phoned) (?:\w+ ){0,3}"
    r"(?:twice|(?:two|three|four|five|six|several|multiple|many|\d+) times)",
    r"(?:four|five|six|several|multiple|many|\d+) times (?:this|a|in|now|today|already|so far)",
    r"waited (?:for )?(?:\d+|an?|two|three|over an?) (?:minutes?|hours?|days?|weeks?)",
    r"(?:error|errors|errored|erroring) out",
    r"(?:skips?|skipping|jumps?|jumping) (?:ahead|back|forward|around)",
    r"drops? to (?:\w+ )?(?:quality|\d+p|sd)",
    r"where did (?:\w+ ){0,4}go",
    r"(?:i was|we were|i'?ve been|we'?ve been|was|were) promised",
    r"(?:and|but) (?:i|we) only (?:have|had|use|used|watch|ordered|signed up for)",
    r"(?:still )?(?:has|have|had|got) access (?:to )?(?:\w+ ){0,2}(?:even )?(?:after|though)",
    r"(?:not available|unavailable) in (?:your|my|this) (?:country|region|area)",
    r"explain(?: yourselves| this| that)?[.!]",
    r"bait and switch|bait-and-switch",
    r"then (?:it )?(?:turns|goes|drops|stops|dies|freezes|crashes|cuts)",
    # es / fr / de parallels of classes above
    r"sin (?:preguntar|consultar|mi (?:permiso|consentimiento))|sans (?:me )?demander|"
    r"sans mon (?:accord|consentement)|ohne (?:mein|meine) (?:zustimmung|einverstandnis)",
    r"(?:me|nos) (?:cambiaron|cambiasteis|han cambiado)",
    r"(?:il|elle|ca|cela|ils|elles|appli\w*|application|site|films?|videos?|titres|image|son|"
    r"page|compte|code|paiement|disques?|dvd|tele|tv|rien) ne (?:s'?|se )?\w+ (?:plus|jamais|pas)",
    r"au lieu de|en (?:lugar|vez) de|(?:an)?statt (?:\d|der|die|den)",
    r"niemand hat (?:uns|mich|mir) (?:\w+ )?(?:informiert|benachrichtigt|gefragt|gesagt|bescheid)",
    r"personne ne (?:m'?a|nous a) (?:\w+ )?(?:prevenu|informe|demande|dit)",
    r"nadie (?:me|nos) (?:\w+ )?(?:informo|aviso|pregunto|dijo)",
    r"kostet (?:\w+ ){0,3}mehr|cuesta (?:\w+ ){0,2}mas|coute (?:\w+ ){0,2}plus",
]

# Structural cues (rules-6), written from the even lines of labels_holdout2.jsonl
# and checked on its odd lines, then the reverse. Classes of sentence rather than
# phrases: a question that reports a fault ("why ... not"), an expectation broken
# ("even though I updated it"), a money mismatch ("charged 15.98 but my plan is
# 7.99"), a request to repair ("please fix that"), a thing that is no longer
# there in de/es/fr negation ("kein Kinderprofil mehr"), going public, and
# angry emoji. Same weight as _MEDIUM; a third regex for the lazy-DFA cache.
_STRUCTURAL = [
    # a question that reports a fault: why + negation
    r"why (?:\w+ ){0,6}(?:not|no|never|n'?t)",
    r"warum (?:\w+ ){0,6}(?:nicht|kein\w*|nie|nur)",
    r"por que (?:\w+ ){0,6}(?:no|nunca|ya no|solo)",
    r"pourquoi (?:\w+ ){0,6}(?:pas|plus|jamais|que)",
    r"was soll das|echt jetzt\?|en serio\?|serieusement\?|explain\?|q(?:ue)? onda con",
    # an expectation broken
    r"even though (?:i|we|it|you|the|my)|aunque (?:ya )?(?:\w+ )?(?:pague|tengo|hice|actualice)|"
    r"obwohl (?:ich|wir)|alors que (?:j'?ai|je|nous)",
    r"(?:never|didn'?t|did not|haven'?t|have not) (?:\w+ )?(?:signed up|sign up|ordered|order|"
    r"requested|request|subscribed|add|added|agreed|authori[sz]ed)",
    # money that does not match
    r"(?:charge|charged|charging|bill|billed|statement|receipt|invoice|cargo|cargos|cobr\w*|"
    r"recibo|abbuchung\w*|rechnung|preleve\w*|releve|factur\w*) (?:\S+ ){0,6}"
    r"(?:but|pero|aber|mais) (?:\S+ ){0,4}(?:only|solo|nur|seulement|just|is|es|ist|est)",
    r"(?:two|three|four|dos|tres|cuatro|zwei|drei|vier|deux|trois|quatre) (?:\w+ )?(?:charges|"
    r"cargos|cobros|abbuchungen|prelevements|planes|plans|bills|rechnungen|factures)",
    r"(?:charged|charging|billed|cobrando|cobran) (?:\S+ ){0,4}(?:extra|more|earlier|before|"
    r"de mas|dos)",
    r"(?:higher|more) than (?:the )?(?:price|advertised|stated|quoted|listed|promised)",
    # a request to repair something
    r"(?:please |bitte |por favor )?(?:fix|correct|sort out|arreglen|arreglenlo|korrigieren|"
    r"korrigiert|corrigez|corriger) (?:\w+ )?(?:that|this|it|eso|esto|das|asap|ya|now)|"
    r"please (?:fix|correct)|bitte (?:korrigieren|beheben|reparieren)|a correction",
    r"(?:the|a) (?:correct|right) (?:one|disc|dvd|movie|film|title)|"
    r"(?:a )?different (?:movie|film|disc|dvd|title|show)",
    # something no longer there, in de/es/fr negation
    r"kein(?:e|en|er)? (?:\w+ ){0,2}mehr|nicht mehr|ya no (?:hay|tengo|aparece\w*|esta\w*|"
    r"funciona\w*|puedo)|(?:n'?y a|ne \w+) plus (?:de|d'|aucun\w*)",
    r"no hay (?:\w+ )?(?:conexion|sonido|audio|imagen|subtitulos)|"
    r"(?:with )?no (?:sound|audio|picture|image|subtitles|video)|pas de (?:son|sous-titres|image)|"
    r"kein(?:en)? (?:ton|bild|untertitel\w*|empfang)",
    r"(?:nicht|not|no|pas) (?:\w+ )?(?:verfugbar|available|disponible)",
    r"ni (?:un|una) (?:sol[oa] )?\w+|nimmt (?:\w+ ){0,4}nicht an|nix",
    r"only works (?:on|in|with)|solo funciona|funktioniert nur|ne (?:marche|fonctionne) que",
    # faults in es/de verbs
    r"se (?:traba|cae|cuelga|congela|corta)|stops every|every (?:\w+ )?minutes",
    # going public
    r"(?:posting|post|tweet\w*|sharing|share) (?:this|it|about)|(?:on|auf|en|sur|in) (?:twitter|"
    r"facebook|reddit)|(?:eltern|verbraucher|kunden)?forum|verbraucherzentrale|"
    r"consumer (?:protection|rights)|la radio|lawyer|abogado|anwalt|avocat",
    # round B (rules-6), written from the odd lines of labels_holdout2.jsonl:
    # an error code, a disputed claim, repeated attempts, "it's not my router"
    r"soi-disant|supposedly|angeblich|supuestamente|cense\w* etre|se supone que|"
    r"sollte eigentlich|eigentlich (?:\w+ ){0,3}(?:sollte|kosten?)",
    r"(?:zweimal|dreimal|viermal|funfmal|mehrmals|x-mal)|(?:dos|tres|cuatro|cinco|varias) veces|"
    r"(?:deux|trois|quatre|cinq|plusieurs) fois",
    r"(?:problem|problema|probleme) (?:ist|es|est|is) (?:nicht|no|pas|not)|"
    r"(?:no es|it'?s not|ist nicht|c'?est pas|n'?est pas) (?:mi|my|mein|ma|mon|el|der|le|the) "
    r"(?:internet|router|conexion|wifi|connexion|modem)",
    # escalation: passing it on to someone technical
    r"(?:pass|forward|escalate|leiten|pasen|pasenlo|transmettre|transmettez) (?:\w+ ){0,4}"
    r"(?:technik\w*|tecnic[oa]|technicien\w*|technical|someone|alguien|quelqu'?un|weiter)|"
    r"take a look|bitte um hilfe|ersatz|bien vouloir corriger|annulation de ces frais",
    # a question that reports a fault: where did it go, an explanation?
    r"donde (?:quedaron|quedo|estan|fueron)|ou sont passe\w*|wo sind (?:\w+ )?(?:hin|geblieben)",
    r"(?:une|an|eine|una) (?:explication|explanation|erklarung|explicacion) ?\?",
    r"nothing (?:would|will|wants to|seems to) (?:load|play|work|start|open)",
    # faults in any language
    r"blank screen|grauer? kasten|schwarzer bildschirm|ecran (?:noir|blanc)|"
    r"pantalla (?:negra|en blanco)",
    r"sans (?:son|image|sous-titres)|sin (?:sonido|audio|imagen)|ohne (?:ton|bild)|ruckel\w*",
    r"(?:kommen|kommt) (?:\w+ ){0,3}nicht an|nur noch",
    r"(?:has |have )?stopped \w+ing",
    r"aucune? (?:explication|courriel|reponse|email|nouvelle)|keine (?:erklarung|email|nachricht)|"
    r"ninguna (?:explicacion|respuesta)|no (?:explanation|warning|notice)",
    r"(?:trouve|finds?|findet|encuentra) (?:\w+ )?(?:rien|nothing|nichts|nada)|zero result\w*|"
    r"no results|aucun resultat|keine ergebnisse|ningun resultado",
    r"can'?t afford|no puedo pagar|kann mir (?:\w+ )?nicht (?:mehr )?leisten|n'?ai plus les moyens",
    r"mixed (?:up )?with|mezclad[oa]|melange\w*|vermischt",
    r"not the best|(?:nicht|no|pas) (?:\w+ )?(?:der|el|le) (?:beste|mejor|meilleur)",
    r"(?:franchement|honestly|ehrlich|en serio)[.!]",
    r"(?:otro|nuevo) aumento|aumento de(?:l)? precio|subida de(?:l)? precio",
    r"(?:telling|tell|warn\w*) (?:everyone|everybody|all my friends|my friends)|blog\w*|"
    r"allen erzahlen|a todo el mundo|a tout le monde",
    # angry or sulking emoji
    r"emoji-angry",
]

# Weak cues: two of them, or one with anything else, make a complaint.
_WEAK = [
    r"problems?",
    r"issues?",
    r"refund(?:ed|s)?",
    r"again",
    r"still",
    r"error",
    r"wrong",
    r"bad",
    r"poor",
    r"worse",
    r"missing",
    r"lost",
    r"buffering",
    r"(?:can'?t|cannot|unable to) (?:even )?(?:find|get|see|use|change|watch)",
    r"seriously",
    r"really\?",
    r"no longer",
    r"removed",
    r"(?:expensive|pricey)",
    r"(?:went|gone|go|going) up",
    r"hike",
    r"!{2,}",
    r"\?{2,}|\?!|!\?",
    r"ugh+",
    r"sigh",
    r"problema",
    r"error",
    r"otra vez",
    r"de nuevo",
    r"probleme",
    r"encore",
    r"problem(?:e)?",
    r"schon wieder",
    r"fehler",
    r"instead of",
    r"(?:been|for|over) (?:\d+|two|three|four|five|six|several) (?:days|weeks|months)",
    # asking for a fault to be looked at: with a fault cue, still a complaint
    r"look into (?:it|this|that)|investigate|replacement|replace (?:it|the \w+)",
    r"(?:check|find out|see|tell me) (?:what|why) (?:happened|is going on|went wrong|it)",
    r"for (?:a|an|one|over a|almost a) (?:week|month|day|fortnight)",
    # rules-6: a quoted message or a word in scare quotes ('valued', 'page not found')
    r"\s['\"][^'\"\n]{2,40}['\"](?:[\s.,!?]|$)",
]

# Placed before a negative phrase, these turn annoyance into anger.
_INTENSIFIERS = (
    r"(?:absolutely|completely|totally|utterly|extremely|so|really|very|incredibly|truly|"
    r"beyond|seriously|just|simply|honestly|super|way|deeply|incredibly|muy|totalmente|"
    r"realmente|absolument|vraiment|completement|totalement|tres|trop|absolut|total|"
    r"wirklich|extrem|vollig|echt|sehr)"
)

# Cheap sarcasm: praise words immediately undone ("great, another price hike").
_SARCASM = [
    r"(?:great|wonderful|fantastic|brilliant|lovely|nice|awesome|perfect|thanks|thank you|"
    r"genius|bravo|wow|well done|good job)[,.!]*\s+(?:another|yet another|now|so now|just what|"
    r"more|a \w+ price|for nothing|once again|again)",
    r"oh (?:great|good|wonderful|joy|perfect)",
    r"just what (?:i|we) (?:needed|wanted)",
    r"yeah right",
    r"[.!]\s+not[.!]",
    r"(?:brilliant|great|perfect|nice) timing",
    r"genius move",
    r"love (?:how|that) you",
    r"of course[.!]",
    r"^sure,|[.!?]\s+sure,",
    r"really appreciated[.!]+\s+not",
    # rules-5
    r"oh (?:sure|yes|yay|lovely|fantastic|brilliant|wonderful)",
    r"(?:que bien|genial|estupendo|fantastico)[,.!]+\s+(?:otra vez|de verdad|otra)",
    r"(?:genial|super|bravo|parfait|merci|toll|klasse)[,.!]+\s+"
    r"(?:vraiment|de verdad|wirklich|echt)",
    r"(?:brilliant|genius|clever|great|smart) (?:design|idea|move|decision|plan|thinking)",
    r"love that for me",
    r"just wow|wow[.!]+\s+just",
    r"thanks for (?:that|nothing)|merci,? vraiment|gracias,? de verdad|danke,? wirklich",
    r"(?:super|genial|toll|prima|merci|gracias|danke|bravo|parfait|perfecto|perfekt)[,.!]*\s+"
    r"(?:encore|otra|otro|de nuevo|schon wieder|noch (?:ein|mehr)|wieder|une autre|un autre)",
    # rules-6: mock appreciation as a sentence of its own
    r"[.!]\s*(?:very|really|truly|so|how) (?:helpful|touching|impressive|visionary|thoughtful|"
    r"considerate|generous|useful|reassuring|professional)(?: stuff)?[.!]",
    r"(?:excellent|great|perfect|brilliant|nice) (?:timing|way to)|love how",
    r"(?:ganz |echt |wirklich )?(?:toll|super|klasse|prima) gemacht",
    r"(?:merci|thanks|thank you|gracias|danke)(?: bien| a lot| so much)?\.{3}",
    r"\.{3} ?(?:para|for|pour|fur) (?:ustedes|you|vous|euch)",
    r"(?:la )?meme definition|same definition",
    # round B
    r"yeah,? thanks|(?:ay )?que lindo|genau das hat (?:mir )?(?:noch )?gefehlt|living the dream|"
    r"love being|bold choice|scenic route|gracias por pensar en",
    r"wow,? only|ganz toll,? dass",
]

# What takes points away: a how-to question, a polite request, praise.
_QUESTION = [
    # the opening of the body only ("\n" joins subject and body): a subject such
    # as "What happened to my account" is a headline, not a how-to question
    # ("can" only before a space: "Can't log in" opens a report, not a question)
    r"\n\s*(?:(?:hi|hello|hey|dear \w+)[\s,!.]*)?(?:(?:how|what|where|when|which|could|is|are|"
    r"do|does|would|will|may)\b|can )",
    r"how (?:do|can|could|would|should) (?:i|we)",
    r"is (?:it|there) (?:possible|a way)",
    r"(?:can|could|would) you (?:please |kindly )?(?:tell|help|explain|let|confirm|send|add|"
    r"update|change|show|check)",
    r"please (?:update|change|add|send|confirm|let me know|advise|help|tell)",
    r"(?:i'?d|i would|we'?d|we would) like to",
    r"quick question",
    r"just curious",
    r"please (?:\w+ )?(?:cancel|close|end|terminate)",
    r"(?:cancel|close|end) (?:my |our )?(?:\w+ )?please",
    # a personal reason to leave is not a grievance
    r"(?:we'?re|i'?m|we are|i am) (?:\w+ )?(?:travelling|traveling|relocating|emigrating|moving "
    r"(?:house|home|abroad|away|overseas|out|in|countries|to (?:a |an )?(?:new )?(?:flat|apartment"
    r"|house|home|place|country|city|state|town)))",
    r"demenag\w*|umzug|ziehen (?:\w+ )?um|nos mudamos|me mudo",
    r"(?:don'?t|do not|no longer) (?:have|own|need) (?:a|an|the) \w+(?: \w+)? anymore",
    r"cutting (?:back|costs)|lost my job|(?:don'?t|do not|no longer) (?:watch|use) (?:it )?much",
    r"just wondering",
    # rules-5
    r"any (?:tips|ideas|suggestions|advice|settings?)|"
    r"just trying to understand|just (?:want|wanted|need|needed) to (?:know|understand|check)",
    r"ya no (?:lo |la )?(?:usamos|uso|vemos|veo|necesito|necesitamos)|"
    r"ne l'?(?:utilisons|utilise) plus|(?:nutzen|nutze) es (?:kaum|nicht) (?:noch|mehr)|"
    r"(?:won'?t|will not) be using it|not using it (?:anymore|much)|"
    r"solo quiero saber|nothing personal|nothing against (?:you|the service)|no hard feelings",
    r"merci de|je (?:souhaite|voudrais|veux bien)|quisiera|me gustaria|ich (?:mochte|wurde gern)",
    r"como (?:puedo|hago|se)",
    r"comment (?:puis|faire|est-ce)",
    r"wie (?:kann|konnen) (?:ich|wir|man)",
    r"por favor",
    r"s'?il vous plait",
    r"bitte",
    # rules-6: a suggestion is not a grievance
    r"(?:feature )?idea:",
    r"idee ?:",
    r"tip:",
    r"idea para|feature request|fyi|"
    r"(?:would|it'?d) be (?:great|nice|cool|awesome|helpful)|estaria (?:bien|buenisimo|genial)|"
    r"seria (?:genial|bueno|ideal)|ce serait (?:bien|top|super|genial|pratique)|"
    r"(?:es )?ware (?:schon|toll|super|gut|praktisch)",
]
# Marks of a question, a request, a greeting, politeness or a good mood: a
# ticket without any of them (nor praise, a question opening, a fix or a
# negated negative) is a bare statement, and bare statements to a helpdesk are
# mostly complaints. A structural rule rather than more phrases, so it was
# measured on rules-4, whose held-out labels_holdout.jsonl it had not seen:
# complaint F1 0.771 -> 0.835 (precision 0.896 -> 0.863, recall 0.676 -> 0.809)
# with the first 6 lines of this list, and recall on a fresh batch of 32
# implicit complaints 0.38 -> 0.75 at the same false positives; the request and
# mood lines were then added from the tuning sets' false positives.
_POLITE = [
    r"\?",
    # a request or a wish, not a report
    r"just|only|solo|juste|seulement|nur|hope|suggestion|feature request|would be nice",
    r"(?:i|we) (?:need|want|would like|wanna)|i'?d like|(?:solo )?quiero|je (?:veux|voudrais)|"
    r"ich (?:brauche|mochte|will)|necesito|j'?ai besoin",
    # a good mood the praise lexicon does not list
    r"superb\w*|loved|enjoy\w*|glad|hooked|well played|great|good|nice|cool",
    r"please|pls|plz|thanks?|thank you|thx|cheers|appreciate\w*",
    r"hi|hello|hey|dear|good (?:morning|afternoon|evening)",
    r"just (?:wanted|a (?:note|heads up|suggestion|question))|no action needed|heads up",
    r"merci|gracias|danke|bitte|por favor|s'?il vous plait|svp",
    r"hola|buenas|bonjour|salut|hallo|guten tag",
]
# A report that the problem is over ("fixed now, thanks") outweighs the problem words in it.
_RESOLVED = [
    r"(?:is|are|was|were|been|got|now) (?:\w+ )?(?:fixed|resolved|solved|sorted)",
    r"(?:it'?s|is|all|everything'?s) fine now",
    r"fixed now|problem solved|all good now|works now|working again|back to normal",
    r"loads now|plays (?:fine|perfectly) now",
    r"thanks? (?:you )?for (?:fixing|sorting|resolving|solving)",
    r"se arreglo|esta arreglado|(?:ya )?(?:esta )?resuelto|ya funciona|funciona de nuevo",
    r"(?:est|c'?est) regle|(?:est )?resolu|fonctionne (?:a nouveau|de nouveau)|marche a nouveau",
    r"(?:ist )?behoben|(?:ist )?gelost|funktioniert wieder|geht wieder",
]
_PRAISE = [
    r"love",
    r"loving",
    r"awesome",
    r"excellent",
    r"amazing",
    r"fantastic",
    r"brilliant",
    r"wonderful",
    r"perfect(?:ly)?",
    r"kudos",
    r"great (?:job|work|service|app|update|experience|selection|show|shows)",
    r"(?:nice|good) (?:job|work)",
    r"(?:works?|working|worked) (?:great|perfectly|fine|well)",
    r"(?:i'?m|i am|we'?re|we are|always been|been) "
    r"(?:really |very |so )?(?:happy|pleased|satisfied)",
    r"well done",
    r"keep it up",
    r"thank you so much",
    r"thanks so much",
    r"much appreciated",
    r"thank(?:s| you) for (?:everything|all|years|the years)",
    r"(?:you'?ve|you have|it'?s|it has|has|have) been (?:great|wonderful|brilliant|lovely)",
    r"great though",
    r"nothing wrong",
    r"merci pour tout|gracias por todo|danke fur alles",
    r"me encanta",
    r"genial",
    r"excelente",
    r"j'?adore",
    r"super",
    r"genial",
    r"toll",
    r"prima",
    r"klasse",
    r"zufrieden",
    # rules-6
    r"(?:still|by far|always) the best|best \w+ ever|flawless|big improvement|zero regrets|"
    r"emoji-happy",
]

# Cut out before scoring: a negated negative is not a complaint.
_NEUTRAL = [
    # a personal reason to leave is not a grievance
    r"lost (?:my|our) jobs?",
    r"not because of (?:you|the service|anything you did)",
    r"ya no (?:lo |la )?(?:usamos|uso|vemos|veo|necesito|necesitamos)",
    r"fine by me|no problem with",
    # asking whether a price will rise is a question, not a grievance
    r"(?:is|are|will|would) (?:the |my |our )?(?:price|prices|bill|fee|fees|plan)s? "
    r"(?:\w+ )?(?:go|going|be going) up",
    _NEG + r" (?:\w+ )?(?:problems?|issues?|complaints?|complain(?:ing)?|worries|worry|rush|"
    r"bad|terrible|awful|horrible|hurry|big deal|trouble|errors?|hate|unhappy|upset|angry|mad)",
    r"(?:can'?t|cannot|could not|couldn'?t) complain",
    r"(?:all|everything)(?:'s| is| works)? (?:good|fine|working)",
    r"sorry to (?:bother|trouble)",
    r"thanks again",
    r"sin problema",
    r"pas de (?:probleme|souci)",
    r"kein (?:problem|stress)",
    # round B
    r"rien de grave|nothing serious|nichts schlimmes|nada grave|no es por nada malo|nothing bad",
    r"ningun problema",
    r"no (?:estoy|estamos) (?:\w+ )?(?:enfadad|molest|enojad)[oa]s?",
    r"nicht schlecht",
    # rules-6
    r"(?:nicht|not|no|pas) (?:\w+ )?(?:unzufrieden|unhappy|mecontent\w*|descontent\w*)",
    r"no es (?:una )?queja|(?:ce n'?est )?pas une plainte|keine beschwerde",
    r"pas mal",
]

# Threats and plans to leave. Negated forms are cut out first (_CANCEL_NEUTRAL).
_CANCEL = [
    r"cancel+(?:ing|ed|led|lation|s)?",
    r"(?:close|closing|delete|deleting|terminate|terminating|end|ending|stop|stopping) "
    r"(?:my|our|the) (?:account|subscription|membership|plan|service)",
    r"(?:switch|switching|moving|move|going|go|jumping) (?:over |back )?to (?:netflix|hulu|disney|"
    r"hbo|max|prime|amazon|apple|peacock|paramount|youtube|a competitor|another (?:service|"
    r"provider|company)|a different (?:service|provider|company)|something else|"
    r"the competition|redbox)",
    r"(?:switch|switching) (?:providers|services)",
    r"(?:go|going|move|moving|switch|switching) back to (?:cable|satellite|dvds?|discs|"
    r"physical media|blu-?rays?|piracy|torrent\w*|buying)",
    r"(?:i'?m|i am|we'?re|we are) (?:so |totally |completely )?(?:done|out|leaving|gone|finished)"
    r"(?: with (?:you|this|your|it)(?: \w+)?)?(?:[.!,]|$)",
    r"(?:i'?m|i am|we'?re|we are) (?:so |totally |completely )?(?:done|finished) with "
    r"(?:you|your|this|the (?:\w+ )?(?:plan|service|subscription|membership|company))",
    r"close (?:my|our) (?:\w+ )?account",
    r"(?:i'?m|i am|we'?re|we are|i'?ll|i will|we'?ll|we will) (?:\w+ )?(?:leaving|leave|quit|"
    r"quitting|unsubscrib\w*|walk(?:ing)? away)",
    r"(?:not|won'?t|will not|wont|never) (?:to )?(?:be )?renew(?:ing|al)?",
    r"unsubscrib\w*",
    r"(?:take|taking|took) (?:my|our) (?:business|money|custom) elsewhere",
    r"(?:last|final) (?:month|payment|bill) (?:with|from|you)",
    r"lost (?:a|another) customer",
    r"(?:you'?ve|you have|you just) lost (?:me|a customer|us)",
    r"(?:i|we) quit",
    r"goodbye",
    r"time to (?:leave|go|move on|look elsewhere|find (?:a|another) (?:service|provider))",
    # es
    r"cancelar",
    r"cancelo",
    r"cancelare",
    r"dar(?:me|nos)? de baja",
    r"(?:me|nos) (?:doy|damos|voy a dar) de baja",
    r"(?:me|nos) (?:voy|vamos|cambio|cambiamos) (?:a|con) (?:netflix|hbo|disney|amazon|otra|otro)",
    r"adios",
    r"cancelen|cancela(?:d|n)? mi",
    r"den de baja",
    r"me voy(?:[.!,]|$)",
    r"dejo (?:el servicio|la suscripcion|la plataforma|de pagar)",
    r"hasta nunca",
    r"(?:me paso|nos pasamos|me cambio) (?:a|con)\b",
    # fr
    r"resili\w+",
    r"annuler mon abonnement",
    r"(?:me|nous) desabonner",
    r"desabonn\w*",
    r"je (?:pars|m'?en vais|quitte)",
    r"je passe (?:chez|a)\b",
    r"j'?arrete (?:tout|mon abonnement|les frais)|arreter (?:mon|notre) abonnement",
    r"(?:vous avez|vous venez de) perdu (?:un|une) client",
    # de
    r"kundig\w*",
    r"(?:abo|abonnement|mitgliedschaft|vertrag|konto) (?:\w+ ){0,3}?(?:beenden|kundigen|loschen)",
    r"(?:ich|wir) (?:wechsle|wechseln|gehe|gehen) zu",
    r"tschuss",
    r"(?:bin ich|ich bin) weg",
    r"(?:schliessen|loschen|kundigen) sie mein",
    # rules-6: a close/stop verb a few words before the thing closed, in four languages
    r"(?:close|closing|stop|stopping|end|ending|terminate|terminating) (?:my|our|the) "
    r"(?:\w+ ){0,4}(?:account|subscription|membership|plan|service)",
    r"(?:close|cancel) mine",
    r"(?:clore|fermer|arreter|resilier|annuler|mettre fin a) (?:mon|notre|le|ma|l') ?(?:\w+ ){0,2}"
    r"(?:abonnement|compte|forfait)",
    r"(?:cancel\w*|cerrar|cierro|cierren|dar de baja) (?:mi |la |el |me )?(?:\w+ ){0,3}?"
    r"(?:cuenta|suscripcion|plan|parte)|la cierro",
    r"kuendig\w*|(?:ganz|komplett) aufhoren",
    r"(?:i'?m|we'?re|i am|we are) switching(?:[.!,]| to|$)",
    r"ich bin (?:\w+ )?bei (?:lovefilm|amazon|sky|maxdome|der konkurrenz)|"
    r"(?:switch|switching|going|go) (?:over )?to (?:lovefilm|blockbuster)",
    r"let(?:ting)? (?:my|the|our) (?:\w+ )?(?:subscription|membership|plan|account) lapse",
    r"(?:i'?m|i am|we'?re|we are) (?:gone|out) (?:as soon as|when|once|after|at the end)",
    r"(?:we'?ll|we will|i'?ll|i will) (?:find|look for) something else",
    # round B
    r"j'?annule|je (?:vais )?(?:arreter|ferme|fermer)|(?:m'?abonne|aller|vais) ailleurs",
    r"lasse (?:ich )?(?:\w+ ){0,3}auslaufen|auslaufen lassen",
    r"(?:take|taking) my (?:money|business) (?:to|elsewhere)",
    r"(?:pedir|solicitar|quiero|quisiera) (?:la )?baja|denme de baja|darse de baja",
    r"time to let (?:it|this) go|(?:gonna|going to) stop before",
]
_CANCEL_NEUTRAL = [
    r"(?:accidentally|by mistake|mistakenly|by accident) (?:\w+ ){0,2}cancel\w*",
    r"cancel\w* (?:\w+ ){0,2}(?:by accident|by mistake)",
    r"(?:says|shows|showing|marked|listed as) (?:\w+ )?cancel+ed",
    r"(?:she|he|they|friend|wife|husband|mother|mom|dad) (?:\w+ ){0,2}(?:was|is|were|are|has|had) "
    r"(?:\w+ )?cancel\w*",
    r"(?:avais|aviez) resilie",
    r"(?:obwohl|nachdem|seit) ich (?:\w+ ){0,4}gekundigt",
    r"(?:don'?t|do not|didn'?t|did not|won'?t|will not|wont|never|not|no intention (?:of|to)|"
    r"no need to|not going to|not planning to|not trying to|doesn'?t|does not|wouldn'?t|"
    r"would not|rather not|not want to|don'?t want to|not looking to|before (?:i|we))"
    r" (?:\w+ ){0,3}?(?:cancel\w*|leav\w*|switch\w*|quit\w*|unsubscrib\w*|close (?:my|our))",
    r"(?:was|were|been|got|get|gets|is|are|be|been) (?:\w+ )?cancel+ed",
    r"(?:after|since|when|because|though|but|already|had|i|we) (?:i |we )?(?:had |already )?"
    r"cancel+ed (?:\w+ )?(?:ago|last|in|on|before|months?|weeks?|years?|and|but|yet|,)",
    r"(?:after|since|when|though) (?:i|we) (?:had |already )?cancel+ed",
    r"cancel+(?:ed|led)? (?:the |my |an? |this )?(?:\w+ )?(?:order|request|appointment|call|ticket|"
    r"payment|transaction|email|download|hold)",
    r"(?:shipment|order|delivery|payment) (?:was |got |has been )?cancel+ed",
    r"(?:no|sin|pas de|kein) (?:quiero|voy a) cancelar",
    r"no (?:quiero|voy a|pienso) (?:cancelar|darme de baja)",
    r"(?:ne veux pas|ne vais pas) (?:resilier|annuler)",
    r"(?:nicht|keinesfalls) (?:kundigen|gekundigt)",
    r"will (?:nicht|nie) kundigen",
    # rules-5: hypothetical, policy questions, someone else's, email lists
    r"(?:if|when|once|should|whether|in case) (?:i|we) (?:\w+ )?(?:cancel\w*|leave|quit|"
    r"unsubscrib\w*|switch\w*|end|close)",
    r"what happens (?:\w+ ){0,4}(?:cancel\w*|leave)",
    r"(?:whether|if) cancel\w*",
    r"(?:would|does|will|do) cancel+(?:ing|ation)",
    r"(?:apres|depuis) (?:ma|notre) resiliation|despues de (?:cancelar|darme de baja)|"
    r"nach (?:meiner|der) kundigung",
    r"(?:mother|mom|father|dad|wife|husband|friend|partner|sister|brother) (?:\w+ ){0,2}"
    r"(?:asked|asks|wants to know|wonders) (?:whether|if|about|how)(?: \w+){0,3} cancel\w*",
    r"cancel+ation (?:policy|policies|fees?|terms|process|rules|period|charges?|deadline|window|"
    r"cut-?off)",
    r"cancel+ed (?:her|his|their) ",
    r"(?:she|he|my (?:wife|husband|partner|son|daughter|friend|mom|mum|mother|dad|father|sister|"
    r"brother|roommate|flatmate|kid|parents|neighbou?r)) (?:\w+ ){0,2}cancel+ed",
    r"unsubscrib\w* (?:me )?from (?:\w+ ){0,3}(?:emails?|newsletters?|marketing|mailing|"
    r"notifications?|texts?|sms|promotions?)",
    r"si (?:\w+ )?(?:cancelo|cancelamos|me doy de baja|nos damos de baja)",
    r"si (?:je|nous|on) (?:\w+ )?(?:resilie\w*|annule\w*|desabonne\w*)",
    r"wenn (?:ich|wir|man) (?:\w+ )?(?:kundige\w*)",
    r"kundige (?:ich )?nicht",
    # rules-6: instead of leaving, things that were cancelled, what happened to me
    r"(?:instead of|rather than|en lugar de|en vez de|au lieu de|statt) "
    r"(?:\w+ ){0,2}(?:cancel\w*|resilier|kundigen|leaving|quitting)",
    r"cancel+(?:ed|led)? (?:the |my |an? |this )?(?:\w+ )?(?:shipment|delivery|rental|shipping)",
    r"nach (?:meiner |der )?kundigung|(?:j'?ai|nous avons|avons) resilie",
    r"(?:lo )?que me paso con",
    # round B
    r"(?:after|since|despues de|apres) cancel+\w*|(?:after|before) (?:i|we|you) cancel\w*",
    r"je quitte (?:la|mon|ma) (?:compagnie|job|travail|emploi|entreprise|boulot)",
]

# Whole-ticket vetoes of cancel intent: asking on someone else's behalf, or staying.
_CANCEL_VETO = [
    r"asking for (?:a friend|my \w+)",
    r"(?:i|we) (?:\w+ )?(?:want|would like|wish|plan|intend) to stay",
    r"(?:i'?m|i am|we'?re|we are) staying",
    r"(?:undo|reverse|reinstate|reactivate|restore) (?:\w+ ){0,3}(?:cancel\w*|account|membership)",
]

_STOP_WORDS: dict[str, str] = {
    "en": r"the|and|is|are|my|you|your|this|that|with|have|has|was|for|not|it|of|to|i|"
    r"please|can|why|how|what|just|been|again|would|it's|i'm|don't",
    "es": r"el|los|las|del|y|mi|mis|por|para|pero|muy|esta|estoy|hola|gracias|lo|ya|porque|"
    r"tengo|hace|desde|cuando|tambien|nada|otra|vez|ahora|usted|su|al|que|una|es|con|no",
    "fr": r"le|les|des|et|est|je|j|mon|mes|pas|une|pour|avec|ce|cette|vous|nous|suis|ai|au|"
    r"aux|sur|qui|mais|tres|bonjour|merci|depuis|encore|c|n|l|qu|d|du|m|plus",
    "de": r"der|die|das|und|ist|ich|nicht|mein|meine|ein|eine|mit|fur|zu|sie|auf|wir|habe|"
    r"hat|bitte|hallo|danke|auch|schon|noch|wieder|mir|mich|kein|keine|dem|den|wie|warum|"
    r"aber|sehr|seit|jetzt|ihr|ihre|es",
}

_WEIGHT_STRONG = 2.0
_WEIGHT_MEDIUM = 1.0
_WEIGHT_WEAK = 0.5
_WEIGHT_INTENSIFIER = 1.0
_WEIGHT_SARCASM = 1.0
_WEIGHT_CANCEL = 1.0
_WEIGHT_DECLARATIVE = 0.5
_DAMPEN_QUESTION = 0.5
_DAMPEN_PRAISE = 0.5
_DAMPEN_RESOLVED = 1.5


# 😠 😡 😤 😒 🙄 👎 🤬 😩 😞 💩 😑, and 🎉 😂 😍 ❤ 👍 🥰 😊
_ANGRY_EMOJI = (
    "\U0001f620\U0001f621\U0001f624\U0001f612\U0001f644\U0001f44e"
    "\U0001f92c\U0001f629\U0001f61e\U0001f4a9\U0001f611"
)
_HAPPY_EMOJI = "\U0001f389\U0001f602\U0001f60d\u2764\U0001f44d\U0001f970\U0001f60a"


def _fold_map() -> dict[str, str]:
    """Latin letters with diacritics -> plain letters, and typographic quotes ->
    "'". Built once from unicodedata; applied by Polars' Aho-Corasick
    ``replace_many``, ten times faster than NFKD + removing marks."""
    folds = {"\u00df": "ss", "\u0142": "l", "\u00f8": "o", "\u0153": "oe", "\u00e6": "ae"}
    for code in range(0x00C0, 0x0180):
        char = chr(code).lower()
        base = unicodedata.normalize("NFKD", char)[:1]
        if base != char and base.isascii() and base.isalpha():
            folds.setdefault(char, base)
    folds.update(dict.fromkeys("\u2019\u2018`\u00b4", "'"))
    # emoji become ASCII words, so the regexes stay on their fast ASCII path
    # (a class of emoji alone cost a quarter of the structural regex's time)
    folds.update(dict.fromkeys(_ANGRY_EMOJI, " emoji-angry "))
    folds.update(dict.fromkeys(_HAPPY_EMOJI, " emoji-happy "))
    return folds


_FOLDS = _fold_map()


def _plain(text: str) -> str:
    """The same normalisation the frame gets, for phrases from config."""
    lowered = text.lower()
    return "".join(_FOLDS.get(ch, ch) for ch in lowered).strip()


def _is_word(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")


def _phrase_regex(phrase: str) -> str:
    """Compile one taxonomy phrase (see transforms.taxonomy for the syntax)."""
    plain = _plain(phrase)
    wildcard = plain.endswith("*")
    core = plain.rstrip("*").strip()
    body = r"\s+".join(re.escape(part) for part in core.split())
    body += r"\w*" if wildcard else r"(?:s|es|d|ed|ing)?"
    start = r"\b" if _is_word(core[:1]) else ""
    end = r"\b" if (wildcard or _is_word(core[-1:])) else ""
    return start + body + end


def _topic_regex(topic: Topic) -> str | None:
    parts = sorted({_phrase_regex(p) for p in topic.phrases if p.strip("* ")}, key=len)
    if not parts:
        return None
    return _ascii("(?:" + "|".join(reversed(parts)) + ")")


def _ascii(regex: str) -> str:
    """ASCII word classes and boundaries: measured 30-150x faster than Unicode ones
    in big alternations (the Unicode \\b and \\w push Rust's lazy DFA off its fast
    path). Correct because the text is accent-folded to ASCII first."""
    return regex.replace(r"\w", "[a-z0-9_]").replace(r"\b", r"(?-u:\b)")


_NO_END_BOUNDARY = (":", r"\.{3}", "!", r"\?", "|$)", "!{2,}", "[.!]", ",")


def _bounded(fragments: Iterable[str]) -> str:
    """Like :func:`_alternation` but only puts ``\\b`` next to word characters."""
    unique = sorted(set(fragments), key=lambda f: (-len(f), f))
    parts = []
    for frag in unique:
        start = "" if frag.startswith(("!", r"\?", "^", r"\n", "[.!]")) else r"\b"
        end = "" if frag.endswith(_NO_END_BOUNDARY) else r"\b"
        parts.append(start + "(?:" + frag + ")" + end)
    return _ascii("(?:" + "|".join(parts) + ")")


_STRONG_RE = _bounded(_STRONG)
_MEDIUM_RE = _bounded(_MEDIUM)
_IMPLICIT_RE = _bounded(_IMPLICIT)
_STRUCTURAL_RE = _bounded(_STRUCTURAL)
_WEAK_RE = _bounded(_WEAK)
_NEGATIVE_ANY = "(?:" + "|".join(sorted(set(_STRONG + _MEDIUM), key=lambda p: (-len(p), p))) + ")"
_INTENSIFIED_RE = _ascii(r"\b" + _INTENSIFIERS + r"\s+(?:\w+\s+)?" + _NEGATIVE_ANY + r"\b")
_SARCASM_RE = _bounded(_SARCASM)
_QUESTION_RE = _bounded(_QUESTION)
_PRAISE_RE = _bounded(_PRAISE)
_RESOLVED_RE = _bounded(_RESOLVED)
_CANCEL_VETO_RE = _bounded(_CANCEL_VETO)
_POLITE_RE = _bounded(_POLITE)
_NEUTRAL_RE = _bounded(_NEUTRAL)
_CANCEL_RE = _bounded(_CANCEL)
_CANCEL_NEUTRAL_RE = _bounded(_CANCEL_NEUTRAL)


def _rules_fingerprint() -> str:
    return json.dumps(
        [
            _STRONG_RE,
            _MEDIUM_RE,
            _IMPLICIT_RE,
            _STRUCTURAL_RE,
            _WEAK_RE,
            _INTENSIFIED_RE,
            _SARCASM_RE,
            _QUESTION_RE,
            _PRAISE_RE,
            _RESOLVED_RE,
            _POLITE_RE,
            _WEIGHT_DECLARATIVE,
            _CANCEL_VETO_RE,
            _NEUTRAL_RE,
            _CANCEL_RE,
            _CANCEL_NEUTRAL_RE,
            _STOP_WORDS,
        ]
    )


def labeller_version(
    topics: Sequence[Topic], model: LabelModel | None = None, *, rules_only: bool = False
) -> str:
    """Rules (and model) version plus a short hash of the taxonomy, the compiled
    rules and the model's weights file, so changing a phrase in backlash.toml, a
    lexicon here or one weight without bumping a version still yields a new
    version and a relabel."""
    payload = json.dumps(
        [[t.name, t.description, list(t.phrases)] for t in topics], ensure_ascii=False
    )
    prefix, weights = RULES_VERSION, ""
    if not rules_only:
        model = model or default_model()
        prefix, weights = f"{RULES_VERSION}+{model.version}", model.digest
    digest = hashlib.sha256((payload + _rules_fingerprint() + weights).encode()).hexdigest()[:10]
    return f"{prefix}+{digest}"


def normalised_texts(subject: pl.Series, body: pl.Series) -> pl.Series:
    """The text every rule and the n-gram model read, for training the model on
    exactly what the labeller will show it."""
    frame = pl.DataFrame({"subject": subject, "body": body}, schema=_TEXT_SCHEMA)
    return frame.select(_normalised_text().alias("text"))["text"]


_TEXT_SCHEMA = {"subject": pl.String, "body": pl.String}


def _normalised_text() -> pl.Expr:
    """Subject and body as one lower-case, accent-free string.

    Accents go because customers type "decu" as often as "déçu", and because
    ASCII text keeps the regex engine on its fast path."""
    text = pl.concat_str(
        [pl.col("subject").fill_null(""), pl.col("body").fill_null("")], separator="\n"
    )
    return text.str.to_lowercase().str.replace_many(_FOLDS)


def _stop_word_counts() -> list[pl.Expr]:
    head = pl.col("_text").str.slice(0, _LANG_WINDOW)
    return [
        head.str.count_matches(_ascii(r"\b(?:" + words + r")\b")).alias(f"_lang_{lang}")
        for lang, words in _STOP_WORDS.items()
    ]


def _language() -> pl.Expr:
    """The language with most stop words; ties go to the first listed (English)."""
    counts = {lang: pl.col(f"_lang_{lang}") for lang in _STOP_WORDS}
    best = pl.max_horizontal(list(counts.values()))
    expr = pl.when(best == 0).then(pl.lit("und"))
    for lang, count in counts.items():
        expr = expr.when(count == best).then(pl.lit(lang))
    return expr.otherwise(pl.lit("und"))


def _cancel_phrases(frame: pl.DataFrame) -> pl.DataFrame:
    """``_row`` and the cancellation phrases of the tickets that mention leaving.

    Only a few tickets in a hundred do, so the negation and veto rules (the
    costliest, being full of common words like "he" and "not") run on those
    alone: a third of the labeller's time otherwise."""
    leaving = frame.filter(pl.col("_mentions_leaving")).select("_row", "_text")
    return leaving.select(
        "_row",
        pl.when(pl.col("_text").str.contains(_CANCEL_VETO_RE))
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(
            # negated cancellations are cut out before matching
            pl.col("_text").str.replace_all(_CANCEL_NEUTRAL_RE, " ~ ").str.extract_all(_CANCEL_RE)
        )
        .alias("_cancel"),
    )


def label_tickets(
    tickets: pl.DataFrame,
    topics: Sequence[Topic] = DEFAULT_TOPICS,
    model: LabelModel | None = None,
    *,
    rules_only: bool = False,
) -> pl.DataFrame:
    """Label every ticket in one vectorised pass per rule, then let the n-gram
    model vote (transforms.label_model; ``model`` defaults to the shipped
    weights). ``rules_only`` is the rules-6 labeller alone, for comparisons."""
    if not rules_only:
        model = model or default_model()
    version = labeller_version(topics, model, rules_only=rules_only)
    topics = tuple(topics)
    frame = tickets.select(
        pl.col("ticket_key").cast(pl.String),
        (pl.col("subject") if "subject" in tickets.columns else pl.lit(None))
        .cast(pl.String)
        .alias("subject"),
        (pl.col("body") if "body" in tickets.columns else pl.lit(None))
        .cast(pl.String)
        .alias("body"),
    )
    frame = frame.with_columns(_normalised_text().alias("_text")).with_row_index("_row")
    frame = frame.with_columns(
        *_stop_word_counts(),
        # Negated negatives are cut out before matching.
        pl.col("_text").str.replace_all(_NEUTRAL_RE, " ~ ").alias("_c"),
        pl.col("_text").str.contains(_CANCEL_RE).alias("_mentions_leaving"),
    )
    frame = frame.with_columns(
        _language().alias("language"),
        pl.col("_c").str.extract_all(_STRONG_RE).alias("_strong"),
        pl.col("_c").str.extract_all(_MEDIUM_RE).alias("_medium"),
        # what _MEDIUM matched is cut out first, so one phrase never counts twice
        pl.col("_c")
        .str.replace_all(_MEDIUM_RE, " ~ ")
        .str.extract_all(_IMPLICIT_RE)
        .alias("_implicit"),
        pl.col("_c").str.extract_all(_STRUCTURAL_RE).alias("_structural"),
        pl.col("_c").str.extract_all(_WEAK_RE).alias("_weak"),
        pl.col("_c").str.extract_all(_INTENSIFIED_RE).alias("_intense"),
        pl.col("_c").str.extract_all(_SARCASM_RE).alias("_sarcasm"),
        pl.col("_c").str.contains(_QUESTION_RE).alias("_question"),
        pl.col("_c").str.contains(_PRAISE_RE).alias("_praise"),
        pl.col("_c").str.contains(_RESOLVED_RE).alias("_resolved"),
        pl.col("_c").str.contains(_POLITE_RE).alias("_polite"),
        *[
            (
                pl.col("_text").str.extract_all(regex)
                if (regex := _topic_regex(t))
                else pl.lit([], dtype=pl.List(pl.String))
            ).alias(f"_t{i}")
            for i, t in enumerate(topics)
        ],
    )
    frame = frame.join(
        _cancel_phrases(frame), on="_row", how="left", maintain_order="left"
    ).with_columns(pl.col("_cancel").fill_null(pl.lit([], dtype=pl.List(pl.String))))
    # A bare statement (no question, greeting, please/thanks, praise, negated
    # negative or fix) is how most complaints are written ("Charged twice."):
    # it tips a single weak cue over...
    frame = frame.with_columns(
        (
            ~pl.col("_polite")
            & ~pl.col("_question")
            & ~pl.col("_praise")
            & ~pl.col("_resolved")
            & ~pl.col("_c").str.contains("~", literal=True)
        ).alias("_declarative")
    )
    # ... and a bare statement about the product itself (it names a topic: "My
    # receipt shows Premium, my app shows Basic.") counts twice: at the
    # threshold on its own. A bare statement is how a customer reports a fault.
    topic_counts = [pl.col(f"_t{i}").list.len() for i in range(len(topics))]
    declarative_boost = 1.0 + (
        pl.any_horizontal([c > 0 for c in topic_counts]) if topics else pl.lit(False)
    ).cast(pl.Float64)
    # Weak cues are capped: a long polite email mentions "issue" and "again"
    # without being a complaint, so they cannot outweigh a single real cue.
    weak = pl.min_horizontal(pl.col("_weak").list.len() * _WEIGHT_WEAK, pl.lit(1.0))
    raw = (
        pl.col("_strong").list.len() * _WEIGHT_STRONG
        + (
            pl.col("_medium").list.len()
            + pl.col("_implicit").list.len()
            + pl.col("_structural").list.len()
        )
        * _WEIGHT_MEDIUM
        + weak
        + pl.col("_intense").list.len() * _WEIGHT_INTENSIFIER
        + pl.col("_sarcasm").list.len() * _WEIGHT_SARCASM
        + pl.col("_declarative").cast(pl.Float64) * _WEIGHT_DECLARATIVE * declarative_boost
        # asking how to leave is a question; saying you leave is a threat
        + (pl.col("_cancel").list.len() > 0).cast(pl.Float64)
        * _WEIGHT_CANCEL
        # ... and saying it politely ("please close my account, thanks") is a request
        * (1.0 - 0.5 * (pl.col("_question") | pl.col("_polite")).cast(pl.Float64))
        - pl.col("_question").cast(pl.Float64) * _DAMPEN_QUESTION
        # praise in a sarcastic ticket is part of the sarcasm
        - (
            pl.col("_praise")
            & (pl.col("_sarcasm").list.len() == 0)
            & (
                pl.col("_strong").list.len()
                + pl.col("_structural").list.len()
                + pl.col("_medium").list.len()
                == 0
            )
        ).cast(pl.Float64)
        * _DAMPEN_PRAISE
        - pl.col("_resolved").cast(pl.Float64) * _DAMPEN_RESOLVED
    ).clip(lower_bound=0.0)
    score = raw / (raw + 1.0)
    cancel = pl.col("_cancel").list.len() > 0
    model_evidence: list[str] = []
    if model is not None:
        # The vote (see transforms.label_model): the rules decide unless the
        # model is sure (its probability is then the score); a cancellation the
        # rules found stands unless the model finds it implausible, and the
        # model alone flags one it is sure of. The n-grams that pushed the model
        # are evidence when the model voted "complaint".
        frame = pl.concat([frame, score_texts(frame["_text"], model)], how="horizontal")
        sure = (pl.col("lm_complaint") < model.complaint_low) | (
            pl.col("lm_complaint") >= model.complaint_high
        )
        score = pl.when(sure).then(pl.col("lm_complaint")).otherwise(score)
        rules_cancel = cancel & (pl.col("lm_cancel") >= model.cancel_veto)
        # ...but not where the rules saw a cancellation phrase and ruled it out
        # (negated, reported, someone else's): "I'm not going to cancel yet."
        model_cancel = ~pl.col("_mentions_leaving") & (pl.col("lm_cancel") >= model.cancel_add)
        cancel = rules_cancel | model_cancel
        frame = frame.with_columns(
            pl.when(pl.col("lm_complaint") >= COMPLAINT_THRESHOLD)
            .then(pl.col("lm_ngrams"))
            .otherwise(pl.lit([], dtype=pl.List(pl.String)))
            .alias("_lm")
        )
        # a cancellation the model vetoed is no evidence either; one the model
        # found alone is quoted by the n-grams that pushed it
        frame = frame.with_columns(
            pl.when(rules_cancel)
            .then(pl.col("_cancel"))
            .when(model_cancel)
            .then(pl.col("lm_cancel_ngrams"))
            .otherwise(pl.lit([], dtype=pl.List(pl.String)))
            .alias("_cancel_ev")
        )
        model_evidence = ["_cancel_ev", "_lm"]
    topic_names = [
        pl.when(count > 0).then(pl.lit(t.name))
        for t, count in zip(topics, topic_counts, strict=True)
    ]
    topic_scores = [
        pl.when(count > 0).then(1.0 - 0.5 ** count.cast(pl.Float64)) for count in topic_counts
    ]
    evidence_parts = [
        "_strong",
        "_medium",
        "_implicit",
        "_structural",
        "_intense",
        "_sarcasm",
        *(model_evidence or ["_cancel"]),
    ] + [f"_t{i}" for i in range(len(topics))]
    empty_list = pl.lit([], dtype=pl.List(pl.String))
    out = frame.with_columns(
        score.alias("complaint_score"),
        (score >= COMPLAINT_THRESHOLD).alias("is_complaint"),
        cancel.alias("cancel_intent"),
        (
            pl.concat_list(topic_names).list.drop_nulls()
            if topics
            else pl.lit([], dtype=pl.List(pl.String))
        ).alias("topics"),
        (
            pl.concat_list(topic_scores).list.drop_nulls()
            if topics
            else pl.lit([], dtype=pl.List(pl.Float64))
        ).alias("topic_scores"),
        pl.concat_list([pl.col(c) for c in evidence_parts] or [empty_list])
        .list.eval(pl.element().str.strip_chars())
        .list.unique(maintain_order=True)
        .alias("evidence"),
        pl.lit(version).alias("labeller_version"),
    )
    return conform(out, TICKET_LABELS)
