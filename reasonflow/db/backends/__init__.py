"""The project's database backends: Django's own, plus a hook that runs just before each
commit (notifications store a transaction's events there, in user order)."""
