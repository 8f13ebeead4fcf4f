"""Read-only admin for the event store."""

from django.contrib import admin

from notifications.models import Event


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["sequence", "type", "user", "created_at"]
    list_filter = ["type", "created_at"]
    search_fields = ["=sequence", "=user__id", "user__email"]
    list_select_related = ["user"]
    readonly_fields = ["user", "sequence", "type", "data", "created_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
