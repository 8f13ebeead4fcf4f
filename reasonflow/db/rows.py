"""Rows read with SQL built once, and loaded as the ORM loads them.

A request's hottest reads (the token's user, the draft an approval locks, a page of emails)
cost more to build through the ORM (a queryset, its filters and lookups, the compiler) than to
run: about 290 µs against 80 µs for the user, 380 µs for the draft and its email, 500 µs for
the page's count. Their SQL is written from the models' fields instead, once per database
vendor, and each row goes through the columns' own converters (compat.column_converters) and
`Model.from_db`: the instances, or the dicts `values()` would give, are the ORM's; only the
query building is skipped.
"""

from collections.abc import Callable, Hashable

from django.db.models import Model

from notifications import compat

# {(model, field names, vendor): Columns}: the same on every connection of one vendor.
_BUILT: dict[tuple, "Columns"] = {}
# {(what the statement does, vendor): its SQL}
_STATEMENTS: dict[tuple, str] = {}


class Columns:
    """Columns of `model` (`names`, its fields' names or attnames; every concrete field by
    default): their SELECT list, qualified by the table, and how to load a row of them."""

    def __init__(self, model: type[Model], connection, names: tuple[str, ...] | None) -> None:
        meta, quote = model._meta, connection.ops.quote_name
        if names is None:
            fields = list(meta.concrete_fields)
            names = tuple(field.attname for field in fields)
        else:
            fields = [meta.get_field(name) for name in names]
        self.model = model
        self.table = quote(meta.db_table)
        self.sql = ", ".join(f"{self.table}.{quote(field.column)}" for field in fields)
        self.names = list(names)
        self.width = len(fields)
        self._converters = compat.column_converters(fields, connection)

    def column(self, name: str, connection) -> str:
        """The qualified column of field `name`."""
        field = self.model._meta.get_field(name)
        return f"{self.table}.{connection.ops.quote_name(field.column)}"

    def value(self, name: str, value, connection):
        """`value` as field `name` sends it to the database; the ORM's exceptions
        (ValidationError, ValueError, TypeError) for a value the field refuses."""
        return self.model._meta.get_field(name).get_db_prep_value(value, connection)

    def converted(self, connection, row, start: int = 0) -> list:
        """The fields' values in `row[start:start + width]`, as the ORM converts them."""
        values = list(row[start : start + self.width])
        for index, column, converters in self._converters:
            value = values[index]
            for convert in converters:
                value = convert(value, column, connection)
            values[index] = value
        return values

    def load(self, connection, row, start: int = 0) -> Model:
        """The instance whose values are `row[start:start + width]`, as the ORM returns it
        (the columns must be every concrete field's)."""
        return self.model.from_db(
            connection.alias, self.names, self.converted(connection, row, start)
        )


def cursor(connection):
    """The cheapest cursor for these reads (compat.driver_cursor)."""
    return compat.driver_cursor(connection)


def statement(key: Hashable, connection, write: Callable[[], str]) -> str:
    """The SQL that `write()` returns for `key` on `connection`'s vendor, written on first
    use: a hot read assembles its statement once, not on every call."""
    cached = (key, connection.vendor)
    sql = _STATEMENTS.get(cached)
    if sql is None:
        sql = _STATEMENTS[cached] = write()
    return sql


def columns(model: type[Model], connection, names: tuple[str, ...] | None = None) -> Columns:
    """Columns of `model` on `connection`'s vendor, built on first use."""
    key = (model, names, connection.vendor)
    built = _BUILT.get(key)
    if built is None:
        built = _BUILT[key] = Columns(model, connection, names)
    return built


class Listing:
    """The rows of `model` whose fields equal `where`'s values, in the model's Meta.ordering,
    read a slice at a time: what Django's Paginator asks of a queryset (`count()`, a slice,
    `ordered`), with both statements built once for the fields filtered on. Rows are model
    instances, or dicts of `values(*names)` as `QuerySet.values()` gives them.
    """

    ordered = True

    def __init__(self, model: type[Model], *, where: dict, names: tuple[str, ...] | None = None):
        if None in where.values():
            raise ValueError("a Listing's conditions are equalities: None matches no row")
        self.model = model
        self.where = where
        self.names = names

    def values(self, *names: str) -> "Listing":
        return Listing(self.model, where=self.where, names=names)

    def count(self) -> int:
        connection = self._connection()
        with cursor(connection) as rows_cursor:
            rows_cursor.execute(self._count_sql(connection), self._params(connection))
            return rows_cursor.fetchone()[0]

    def __getitem__(self, key: slice) -> list:
        connection = self._connection()
        sql, params = self.sql(key)
        read = columns(self.model, connection, self.names)
        with cursor(connection) as rows_cursor:
            rows_cursor.execute(sql, params)
            fetched = rows_cursor.fetchall()
        if self.names is None:
            return [read.load(connection, row) for row in fetched]
        return [
            dict(zip(self.names, read.converted(connection, row), strict=True)) for row in fetched
        ]

    def sql(self, key: slice) -> tuple[str, list]:
        """The statement that reads the slice `key` (start and stop both given), and its
        parameters."""
        if not isinstance(key, slice) or key.step is not None:
            raise TypeError("a Listing is read by slices, start:stop")
        start, stop = key.start or 0, key.stop
        if stop is None or start < 0 or stop < start:
            raise ValueError("a Listing's slice needs 0 <= start <= stop")
        connection = self._connection()
        return self._slice_sql(connection), [*self._params(connection), stop - start, start]

    def _connection(self):
        from django.db import connections, router

        return connections[router.db_for_read(self.model)]

    def _params(self, connection) -> list:
        read = columns(self.model, connection)
        return [read.value(name, value, connection) for name, value in self.where.items()]

    def _where(self, connection) -> str:
        every = columns(self.model, connection)
        conditions = " AND ".join(f"{every.column(name, connection)} = %s" for name in self.where)
        return f" WHERE {conditions}" if conditions else ""

    def _count_sql(self, connection) -> str:
        return statement(
            ("listing count", self.model, tuple(self.where)),
            connection,
            lambda: (
                f"SELECT COUNT(*) FROM {columns(self.model, connection).table}"  # noqa: S608
                f"{self._where(connection)}"
            ),
        )

    def _slice_sql(self, connection) -> str:
        def write() -> str:
            every, read = (
                columns(self.model, connection),
                columns(self.model, connection, self.names),
            )
            order = ", ".join(
                f"{every.column(name.removeprefix('-'), connection)}"
                f"{' DESC' if name.startswith('-') else ' ASC'}"
                for name in self.model._meta.ordering
            )
            order_by = f" ORDER BY {order}" if order else ""
            return (
                f"SELECT {read.sql} FROM {read.table}{self._where(connection)}{order_by} "  # noqa: S608
                "LIMIT %s OFFSET %s"
            )

        return statement(
            ("listing slice", self.model, tuple(self.where), self.names), connection, write
        )
