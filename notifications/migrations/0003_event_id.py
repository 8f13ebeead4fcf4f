from django.conf import settings
from django.db import migrations, models


class RenameUserEventConstraint(migrations.operations.base.Operation):
    """Rename the (user, event number) unique constraint along with its column.

    PostgreSQL renames the index in place (a drop and re-create would lock a large table while
    it rebuilds); SQLite rebuilds the table, as it does for any constraint change. Going back,
    SQLite keeps the new name: Django's RenameField leaves the old constraint naming a column
    that no longer exists in the historical state, so that table cannot be rebuilt from it.
    """

    reversible = True

    def __init__(self, old_name: str, new_name: str):
        self.old_name, self.new_name = old_name, new_name

    def state_forwards(self, app_label, state):
        event = state.models[app_label, "event"]
        event.options["constraints"] = [
            models.UniqueConstraint(fields=("user", "event_id"), name=self.new_name)
            if constraint.name == self.old_name
            else constraint
            for constraint in event.options["constraints"]
        ]
        state.reload_model(app_label, "event", delay=True)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        self._rename(app_label, schema_editor, to_state, self.old_name, self.new_name)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        self._rename(app_label, schema_editor, to_state, self.new_name, self.old_name)

    def _rename(self, app_label, schema_editor, to_state, old: str, new: str):
        event = to_state.apps.get_model(app_label, "Event")
        if schema_editor.connection.vendor == "postgresql":
            quote = schema_editor.quote_name
            schema_editor.execute(
                f"ALTER TABLE {quote(event._meta.db_table)} "
                f"RENAME CONSTRAINT {quote(old)} TO {quote(new)}"
            )
        elif new == self.new_name:  # rebuilds the table with the constraints of `to_state`
            schema_editor.remove_constraint(
                event, models.UniqueConstraint(fields=("user", "event_id"), name=old)
            )

    def describe(self):
        return f"Rename constraint {self.old_name} to {self.new_name}"


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_presence"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(name="event", options={"ordering": ["user", "event_id"]}),
        migrations.RenameField(model_name="event", old_name="sequence", new_name="event_id"),
        RenameUserEventConstraint("event_user_sequence_unique", "event_user_event_id_unique"),
    ]
