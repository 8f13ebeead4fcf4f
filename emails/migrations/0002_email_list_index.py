from django.db import migrations, models


class Migration(migrations.Migration):
    """The emails list's index covers its whole ordering; the new index is built before the old
    one goes, so the list is never without one."""

    dependencies = [
        ("emails", "0001_initial"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="email",
            index=models.Index(
                fields=["owner", "-received_at", "-created_at"], name="email_owner_newest"
            ),
        ),
        migrations.RemoveIndex(model_name="email", name="email_owner_received"),
    ]
