"""User change -> close that user's live sockets, nothing else.

A password change, a logout (token version bump), a deactivation or a deletion revokes the
user's tokens; their open sockets are closed (4002) on every server process.
"""

from django.db.models.signals import post_delete, post_init, post_save
from django.dispatch import receiver

from notifications.publish import revoke_connections
from reasonflow.users.models import User


def _revocation_state(user: User) -> tuple:
    # Read from __dict__ so a deferred field never costs a query here.
    fields = user.__dict__
    return (fields.get("password"), fields.get("is_active"), fields.get("token_version"))


@receiver(post_init, sender=User)
def remember_revocation_state(sender, instance: User, **kwargs) -> None:
    instance._revocation_state = _revocation_state(instance)


@receiver(post_save, sender=User)
def close_sockets_when_tokens_are_revoked(sender, instance: User, created: bool, **kwargs):
    before = getattr(instance, "_revocation_state", None)
    after = _revocation_state(instance)
    instance._revocation_state = after
    if created or before is None:
        return
    (old_password, was_active, old_version), (password, is_active, version) = before, after
    if password != old_password or version != old_version or (was_active and not is_active):
        revoke_connections(user_id=instance.pk)


@receiver(post_delete, sender=User)
def close_sockets_of_a_deleted_user(sender, instance: User, **kwargs) -> None:
    revoke_connections(user_id=instance.pk)
