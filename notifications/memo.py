"""Work done once per group message, not once per socket: every member of a group gets the
same message object (and the same frame text built from it), so a function that remembers its
last argument and result does the work once for the whole fan-out."""

from collections.abc import Callable
from typing import Generic, TypeVar

Argument = TypeVar("Argument")
Result = TypeVar("Result")

_NOTHING = object()


class LastResult(Generic[Argument, Result]):
    """`function(argument)`, computed again only when called with another object than last
    time (compared by identity: a message's members share the object, and an equal but
    separate one costs a second computation, never a wrong result). The last argument is held,
    so its identity cannot pass to a new object."""

    __slots__ = ("_argument", "_function", "_result")

    def __init__(self, function: Callable[[Argument], Result]) -> None:
        self._function = function
        self._argument: object = _NOTHING
        self._result: Result | None = None

    def __call__(self, argument: Argument) -> Result:
        if argument is not self._argument:
            self._result = self._function(argument)
            self._argument = argument
        return self._result
