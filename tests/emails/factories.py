"""factory_boy factories for the email domain's models."""

import uuid

import factory
from django.utils import timezone

from emails.models import Draft, Email
from reasonflow.users.models import User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"owner-{n}-{uuid.uuid4().hex[:6]}@example.com")


class EmailFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Email

    owner = factory.SubFactory(UserFactory)
    source_message_id = factory.LazyFunction(lambda: f"<{uuid.uuid4().hex}@mail.example.com>")
    thread_id = factory.LazyAttribute(lambda email: email.source_message_id)
    subject = "Question about enterprise pricing"
    sender = "John Doe <john.doe@acme-corp.com>"
    recipient = "Demo <demo@reasonflow.local>"
    body = "Hi, could you tell me how your enterprise pricing works?\n\nThanks, John"
    received_at = factory.LazyFunction(timezone.now)


class DraftFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Draft

    email = factory.SubFactory(EmailFactory)
    subject = factory.LazyAttribute(lambda draft: f"Re: {draft.email.subject}")
    body = "Hi John,\n\nThanks for asking. Details follow.\n\nThe ReasonFlow team"
    requires_approval = False
