"""Reply drafts from templates, one per classification, filled with the email's fields."""

import dataclasses
import email.utils
from string import Template

from emails.models import Classification

APPROVAL_CONFIDENCE = 0.8

TEMPLATES: dict[Classification, Template] = {
    Classification.INQUIRY: Template(
        "Hi $name,\n\n"
        'Thank you for your question about "$topic". We are looking into it and will get back '
        "to you with the details within one business day.\n\n"
        "Best regards,\n$signature"
    ),
    Classification.MEETING_REQUEST: Template(
        "Hi $name,\n\n"
        'Thanks for reaching out about "$topic". I would be glad to meet. The times you '
        "suggested should work; I will confirm with a calendar invite shortly. If anything "
        "changes, feel free to propose another slot.\n\n"
        "Best regards,\n$signature"
    ),
    Classification.COMPLAINT: Template(
        "Hi $name,\n\n"
        'I am sorry about your experience with "$topic", and thank you for telling us. I have '
        "escalated this to the responsible team and will personally follow up with you as soon "
        "as we know more, at the latest within one business day.\n\n"
        "Sincerely,\n$signature"
    ),
    Classification.FOLLOW_UP: Template(
        "Hi $name,\n\n"
        'Thank you for following up on "$topic", and sorry for the wait. I am checking on the '
        "status now and will send you an update by the end of the day.\n\n"
        "Best regards,\n$signature"
    ),
    Classification.OTHER: Template(
        "Hi $name,\n\n"
        'Thank you for your message about "$topic". I have received it and will get back to '
        "you if anything is needed from my side.\n\n"
        "Best regards,\n$signature"
    ),
}


@dataclasses.dataclass(frozen=True)
class DraftContent:
    subject: str
    body: str
    requires_approval: bool


def needs_approval(*, classification: str, confidence: float) -> bool:
    """The original ReasonFlow rule: complaints and unsure classifications wait for a human."""
    return classification == Classification.COMPLAINT or confidence < APPROVAL_CONFIDENCE


def reply_subject(subject: str) -> str:
    subject = subject.strip() or "your message"
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"


def sender_first_name(sender: str) -> str:
    name, address = email.utils.parseaddr(sender)
    name = name.strip().strip('"')
    if name:
        return name.split()[0]
    return address.split("@")[0] if address else "there"


def draft_compose(
    *, subject: str, sender: str, classification: str, confidence: float, signature: str
) -> DraftContent | None:
    """The reply for a classified email, or None for spam (it gets no reply)."""
    if classification == Classification.SPAM:
        return None
    template = TEMPLATES.get(Classification(classification), TEMPLATES[Classification.OTHER])
    topic = subject.strip().removeprefix("Re: ").removeprefix("RE: ") or "your message"
    body = template.substitute(name=sender_first_name(sender), topic=topic, signature=signature)
    return DraftContent(
        subject=reply_subject(subject),
        body=body,
        requires_approval=needs_approval(classification=classification, confidence=confidence),
    )
