"""The project's database layer."""
