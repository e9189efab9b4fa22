"""The one retry policy (factory.retry): how many tries, which errors, what backoff."""

from __future__ import annotations

import asyncio

import pytest
from tenacity import RetryCallState, wait_exponential

from factory.retry import RetryPolicy


def test_backoff_doubles_up_to_the_cap_like_tenacitys_exponential_wait() -> None:
    # the Hub push used tenacity's wait_exponential(multiplier=wait_s, max=60): same waits
    policy = RetryPolicy(attempts=9, backoff_s=2.0, max_backoff_s=60)
    reference = wait_exponential(multiplier=2.0, max=60)
    for failed in range(1, 9):
        state = RetryCallState(None, None, (), {})
        state.attempt_number = failed
        assert policy.delay(failed) == reference(state)
    assert [policy.delay(n) for n in (1, 2, 3, 6)] == [2.0, 4.0, 8.0, 60]


def test_sync_retries_only_the_named_errors_and_stops_after_all_tries(monkeypatch) -> None:
    slept: list[float] = []
    policy = RetryPolicy(attempts=3, backoff_s=0.5)
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        raise OSError(f"try {calls}")

    retrying = policy.sync(OSError)
    retrying.sleep = slept.append  # type: ignore[method-assign]
    with pytest.raises(OSError, match="try 3"):  # the last failure itself, after no further sleep
        for attempt in retrying:
            with attempt:
                flaky()
    assert calls == 3 and slept == [0.5, 1.0]

    calls = 0

    def wrong() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        for attempt in policy.sync(lambda exc: isinstance(exc, OSError)):
            with attempt:
                wrong()
    assert calls == 1


def test_async_retry_with_a_callers_wait_and_counter() -> None:
    seen: list[int] = []
    policy = RetryPolicy(attempts=4, backoff_s=10.0)

    async def main() -> int:
        tries = 0
        async for attempt in policy.aio(
            ConnectionError, wait=lambda state: 0.0, before_sleep=lambda state: seen.append(state.attempt_number)
        ):
            with attempt:
                tries += 1
                if tries < 3:
                    raise ConnectionError
                return tries
        raise AssertionError("unreachable")

    assert asyncio.run(main()) == 3 and seen == [1, 2]


def test_a_policy_needs_one_try() -> None:
    with pytest.raises(ValueError, match="at least 1 attempt"):
        RetryPolicy(attempts=0, backoff_s=1.0)
