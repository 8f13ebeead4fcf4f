"""Admin forms for the email-login user model."""

from django.contrib.auth.forms import UserChangeForm, UserCreationForm

from reasonflow.users.models import User


class UserAdminCreationForm(UserCreationForm):
    class Meta:
        model = User
        fields = ("email",)


class UserAdminChangeForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"
