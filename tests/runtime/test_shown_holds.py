"""Held amounts as scrapes and pages show them (the check API always asks its store)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


def test_scrapes_and_pages_share_one_answer_of_redis_a_second(make_engine: Any) -> None:
    """Showing the held amounts costs a Redis round trip: scrapes and pages within a second
    share one; a new snapshot or a second later asks again. Checks are not affected."""
    engine = make_engine(
        "sources:\n  - {name: s, provider: static, amount: 1, currency: USD}\n"
        "budgets:\n  - {name: team, limit: 100, currency: USD}\n"
    )
    asked: list[float] = []

    class CountingRedis:
        kind = "redis"

        def held(self, now: float, covered: Any) -> dict[str, Any]:
            asked.append(now)
            return {"team": Decimal(len(asked))}

        def close(self) -> None:
            pass

    engine.holds = CountingRedis()
    assert engine._held_now() == {"team": Decimal(1)}
    assert engine._held_now() == {"team": Decimal(1)}  # shared
    assert len(asked) == 1
    engine.rebuild()  # a new snapshot asks again
    assert engine._held_now() == {"team": Decimal(2)}
    engine._shown_held = (engine.snapshot, engine._shown_held[1] - 1.5, {"team": Decimal(2)})
    assert engine._held_now() == {"team": Decimal(3)}  # older than a second
    assert len(asked) == 3
