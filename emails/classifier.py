"""Email classification: a `Classifier` interface and the default explainable rule set.

Rules are keyword, sender and reply-header checks with weights; the best-scoring label wins
and the confidence grows with its score and its lead over the runner-up.
"""

import dataclasses
import functools
import re
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

from emails.models import Classification


@dataclasses.dataclass(frozen=True)
class ClassifierInput:
    subject: str
    sender: str
    body: str
    references: str = ""


@dataclasses.dataclass(frozen=True)
class ClassificationResult:
    label: Classification
    confidence: float
    reasons: list[str]


class Classifier(Protocol):
    def classify(self, message: ClassifierInput) -> ClassificationResult:
        """A label, a confidence in [0, 1] and the reasons behind it."""


@dataclasses.dataclass(frozen=True)
class Rule:
    label: Classification
    weight: float
    pattern: re.Pattern
    where: str  # "subject", "body", "text" (both) or "sender"
    why: str


def _rule(label: Classification, weight: float, where: str, *phrases: str) -> Rule:
    pattern = re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)
    return Rule(label, weight, pattern, where, f"{where} mentions {{match!r}}")


C = Classification
RULES: tuple[Rule, ...] = (
    _rule(C.SPAM, 1.5, "text", r"winner", r"claim your prize", r"lottery", r"inheritance"),
    _rule(C.SPAM, 1.0, "text", r"click here", r"act now", r"limited time", r"100% free"),
    _rule(C.SPAM, 1.0, "text", r"no prescription", r"double your", r"guaranteed returns"),
    _rule(C.SPAM, 0.8, "text", r"bank details", r"verify your (?:account|password)", r"bitcoin"),
    _rule(C.SPAM, 1.2, "sender", r"[\w.-]+\.(?:xyz|top|click|loan|win|bid)"),
    _rule(C.COMPLAINT, 1.2, "text", r"unacceptable", r"disappointed", r"worst", r"terrible"),
    _rule(C.COMPLAINT, 1.0, "text", r"refund", r"frustrated", r"escalate", r"complaint"),
    _rule(C.COMPLAINT, 0.6, "text", r"broken", r"still no", r"charged twice", r"cancel\w*"),
    _rule(C.COMPLAINT, 0.5, "text", r"nobody", r"serious problem", r"lost"),
    _rule(C.MEETING_REQUEST, 1.2, "subject", r"meeting", r"meet", r"call", r"demo"),
    _rule(C.MEETING_REQUEST, 1.0, "text", r"schedule", r"calendar invite", r"time slots?", r"slot"),
    _rule(C.MEETING_REQUEST, 0.8, "body", r"availab\w+", r"zoom", r"meet(?:ing)?", r"reschedule"),
    _rule(C.MEETING_REQUEST, 0.4, "body", r"monday|tuesday|wednesday|thursday|friday"),
    _rule(C.FOLLOW_UP, 1.6, "text", r"following up", r"follow(?:ing)?[- ]up", r"circling back"),
    _rule(C.FOLLOW_UP, 1.0, "text", r"checking in", r"any update", r"haven't heard"),
    _rule(C.FOLLOW_UP, 0.6, "text", r"reminder", r"still something"),
    _rule(C.OTHER, 1.2, "sender", r"no-?reply", r"newsletter", r"news", r"notifications?"),
    _rule(C.OTHER, 0.8, "text", r"out of (?:the )?office", r"release", r"weekly", r"photos"),
    _rule(C.INQUIRY, 1.0, "text", r"pricing", r"quote", r"information", r"interested in"),
    _rule(C.INQUIRY, 0.8, "body", r"could you", r"would like to know", r"do you (?:support|offer)"),
    _rule(C.INQUIRY, 0.8, "text", r"how do i", r"question", r"documentation", r"api"),
)
REPLY_WEIGHT = 0.8  # a reply in a thread that nudges toward a follow-up
QUESTION_WEIGHT = 0.4
MIN_SCORE = 0.6  # below this a lone weak hint (a weekday, a question mark) means `other`
SHOUTING_WEIGHT = 0.8


class RuleClassifier:
    """Deterministic weighted rules; `other` when nothing matches."""

    def __init__(self, rules: tuple[Rule, ...] = RULES) -> None:
        self.rules = rules

    def classify(self, message: ClassifierInput) -> ClassificationResult:
        fields = {
            "subject": message.subject,
            "body": message.body,
            "text": f"{message.subject}\n{message.body}",
            "sender": message.sender,
        }
        scores: dict[Classification, float] = {}
        reasons: dict[Classification, list[str]] = {}

        def add(label: Classification, weight: float, why: str) -> None:
            scores[label] = scores.get(label, 0.0) + weight
            reasons.setdefault(label, []).append(why)

        for rule in self.rules:
            match = rule.pattern.search(fields[rule.where])
            if match:
                add(rule.label, rule.weight, rule.why.format(match=match.group(0)))
        if message.references or message.subject.lower().startswith("re:"):
            add(C.FOLLOW_UP, REPLY_WEIGHT, "is a reply in an existing thread")
        if "?" in message.body:
            add(C.INQUIRY, QUESTION_WEIGHT, "asks a question")
        if message.subject.count("!") >= 2 or (
            len(message.subject) > 8 and sum(w.isupper() for w in message.subject.split()) >= 2
        ):
            add(C.SPAM, SHOUTING_WEIGHT, "subject shouts (capitals or !!)")

        ranked = sorted(scores.items(), key=lambda item: (-item[1], list(C).index(item[0])))
        if not ranked or ranked[0][1] < MIN_SCORE:
            return ClassificationResult(C.OTHER, 0.6, ["no rule matched strongly enough"])
        label, top = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        confidence = 0.4 + 0.12 * top + 0.1 * (top - runner_up)
        return ClassificationResult(
            label, round(min(0.99, max(0.3, confidence)), 2), reasons[label]
        )


@functools.cache
def _classifier(path: str) -> Classifier:
    return import_string(path)()


def get_classifier() -> Classifier:
    """The classifier named by the EMAILS_CLASSIFIER setting (a dotted class path)."""
    return _classifier(settings.EMAILS_CLASSIFIER)
