"""The one retry policy (tenacity): a number of tries in all and exponential backoff between
them. The LLM client (`factory.llm.http`), the TTS service client
(`factory.render.service_backend`) and the Hub push (`factory.publish.hub`) each say which errors
are worth another try; how many tries and how long to wait is this policy.

The wait after the n-th failed try is `backoff_s * 2**(n-1)`, at most `max_backoff_s`; a caller
may scale it (the LLM client's seeded jitter) or replace it (a server's Retry-After) through
`wait`. The last failure is re-raised as it was, after no further sleep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int  # tries in all, the first included
    backoff_s: float  # the wait after the first failed try; doubles after each further one
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, got {self.attempts}")

    def delay(self, failed: int) -> float:
        """The wait after the `failed`-th failed try (1 for the first)."""
        return min(self.backoff_s * 2 ** (failed - 1), self.max_backoff_s)

    def sync(
        self,
        retry_on: RetryOn,
        *,
        wait: Callable[[RetryCallState], float] | None = None,
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> Retrying:
        """`for attempt in policy.sync(...): with attempt: ...`"""
        return Retrying(**self._arguments(retry_on, wait, before_sleep))

    def aio(
        self,
        retry_on: RetryOn,
        *,
        wait: Callable[[RetryCallState], float] | None = None,
        before_sleep: Callable[[RetryCallState], None] | None = None,
    ) -> AsyncRetrying:
        """`async for attempt in policy.aio(...): with attempt: ...`"""
        return AsyncRetrying(**self._arguments(retry_on, wait, before_sleep))

    def _arguments(
        self,
        retry_on: RetryOn,
        wait: Callable[[RetryCallState], float] | None,
        before_sleep: Callable[[RetryCallState], None] | None,
    ) -> dict[str, Any]:
        if isinstance(retry_on, type | tuple):
            types = retry_on
            retry_on = lambda exc: isinstance(exc, types)
        arguments: dict[str, Any] = {
            "stop": stop_after_attempt(self.attempts),
            "wait": wait or (lambda state: self.delay(state.attempt_number)),
            "retry": retry_if_exception(retry_on),
            "reraise": True,
        }
        if before_sleep is not None:
            arguments["before_sleep"] = before_sleep
        return arguments
