"""Per-chat state and the edit throttle, on a clock the test moves."""

from __future__ import annotations

from src.bot.state import ChatState, EditThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_edit_goes_at_once_then_one_per_interval():
    clock = Clock()
    throttle = EditThrottle(interval_s=2.0, clock=clock)
    assert throttle.wait_s() == 0
    throttle.mark()
    clock.now += 0.5
    assert throttle.wait_s() == 1.5
    clock.now += 1.5
    assert throttle.wait_s() == 0
    throttle.mark()
    clock.now += 5
    assert throttle.wait_s() == 0


def test_each_chat_has_its_own_state():
    one, two = ChatState(), ChatState()
    one.hotwords.append("张三")
    one.active.add("t1")
    one.throttle.mark()
    assert two.hotwords == [] and two.active == set() and two.throttle.wait_s() == 0
