from notifications.memo import LastResult


def _counted_framing() -> tuple[LastResult, list[dict]]:
    """A remembered framing function, and the messages it has actually framed."""
    framed = []

    def frame(message: dict) -> str:
        framed.append(message)
        return f"data: {message['n']}"

    return LastResult(frame), framed


def test_a_function_runs_once_for_the_members_of_one_message():
    frame, framed = _counted_framing()
    message = {"n": 1}
    assert [frame(message) for _ in range(3)] == ["data: 1"] * 3
    assert framed == [message]


def test_another_object_is_computed_again_even_when_equal():
    frame, framed = _counted_framing()
    assert [frame({"n": 1}), frame({"n": 1}), frame({"n": 2})] == ["data: 1", "data: 1", "data: 2"]
    assert len(framed) == 3


def test_a_new_object_never_gets_the_result_of_one_gone_before_it():
    # Identity is compared, and a freed object's id() can pass to the next one: the last
    # argument is held so that cannot happen.
    value = LastResult(lambda message: message["n"])
    assert [value({"n": n}) for n in range(1000)] == list(range(1000))
