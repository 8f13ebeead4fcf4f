"""Admin for the email domain; status edits here notify like the API (signals)."""

from django.contrib import admin

from emails.models import BatchJob, Draft, Email, MailAccount


class DraftInline(admin.StackedInline):
    model = Draft
    extra = 0
    fields = ["subject", "body", "requires_approval", "status", "rejection_reason", "error"]


@admin.register(Email)
class EmailAdmin(admin.ModelAdmin):
    list_display = ["subject", "sender", "owner", "classification", "status", "received_at"]
    list_filter = ["status", "classification", "is_read"]
    search_fields = ["subject", "sender", "source_message_id", "owner__email"]
    raw_id_fields = ["owner"]
    inlines = [DraftInline]


@admin.register(Draft)
class DraftAdmin(admin.ModelAdmin):
    list_display = ["id", "email", "status", "requires_approval", "created_at"]
    list_filter = ["status", "requires_approval"]
    raw_id_fields = ["email"]


@admin.register(BatchJob)
class BatchJobAdmin(admin.ModelAdmin):
    list_display = ["id", "owner", "kind", "status", "processed", "total", "created_at"]
    list_filter = ["kind", "status"]
    raw_id_fields = ["owner"]


@admin.register(MailAccount)
class MailAccountAdmin(admin.ModelAdmin):
    list_display = ["owner", "last_synced_at"]
    raw_id_fields = ["owner"]
    readonly_fields = ["state", "last_synced_at"]
