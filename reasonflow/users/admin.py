"""Admin for users: the stock UserAdmin adapted to an email login, with the notification
tools (test-notification action, online connections) from notifications/admin.py."""

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from notifications.admin import UserNotificationsAdminMixin
from reasonflow.users.forms import UserAdminChangeForm, UserAdminCreationForm
from reasonflow.users.models import User


@admin.register(User)
class UserAdmin(UserNotificationsAdminMixin, BaseUserAdmin):
    form = UserAdminChangeForm
    add_form = UserAdminCreationForm
    ordering = ["email"]
    list_display = ["email", "id", "is_active", "is_staff", "date_joined", "online_connections"]
    search_fields = ["email", "id"]
    readonly_fields = ["id", "date_joined", "last_login", "online_connections", "event_history"]
    fieldsets = (
        (None, {"fields": ("id", "email", "password", "full_name")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
        ("Notifications", {"fields": ("online_connections", "event_history")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
