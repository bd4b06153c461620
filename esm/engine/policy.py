"""The delivery policy of a stream batch, as a pure function of its state, a result and the time.

Everything Lambda decides about a batch lives here: retry counts, record age, partial batch
failures, bisect and backoff. The policy never sleeps, invokes or settles anything itself: it
answers with decisions (`Invoke`, `Settle`, `GiveUpPart`, `Split`, `Wait`), which a small
driver (`esm.engine.driver.Deliverer`) carries out. So the rules are tested with plain
values and no clock.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from esm.engine.retry import Backoff, GiveUpCondition, RetryPolicy
from esm.model import InvokeResult, Record, ResultKind


@dataclass(frozen=True, slots=True)
class PartState:
    """A part of a batch on its way to the function: the whole batch, a half of it after a
    bisect, or the tail left after a partial failure."""

    records: tuple[Record, ...]
    function_errors: int = 0
    """Failed invocations of exactly these records: their approximateInvokeCount."""
    failures: int = 0
    """Failed invocations in a row, of any kind: what the backoff grows with."""
    last_result: InvokeResult | None = None


@dataclass(frozen=True, slots=True)
class Invoke:
    """Invoke the function with these records now."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class Settle:
    """These records are done: the partition may move past them."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class GiveUpPart:
    """Stop retrying these records: they go to the on-failure destination (or are dropped)."""

    records: tuple[Record, ...]
    condition: GiveUpCondition
    invoke_count: int
    last_result: InvokeResult | None
    """The answer the failure record's responseContext describes; None leaves it out."""


@dataclass(frozen=True, slots=True)
class Split:
    """Bisect: deliver these parts one after the other, each with a count of its own."""

    parts: tuple[tuple[Record, ...], ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """Back off for `seconds`, then ask `before_invoke` again."""

    seconds: float


Decision = Invoke | Settle | GiveUpPart | Split | Wait


@dataclass(frozen=True)
class Step:
    """What happens next: the decisions in order, and the part's new state (None when the
    part is finished: settled, given up or split)."""

    decisions: tuple[Decision, ...]
    state: PartState | None


@dataclass(frozen=True)
class DeliveryPolicy:
    """MaximumRetryAttempts, MaximumRecordAgeInSeconds, BisectBatchOnFunctionError and
    ReportBatchItemFailures of one stream mapping, with its backoff schedule."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    backoff: Backoff = field(default_factory=Backoff)
    bisect: bool = False
    rng: random.Random | None = None
    """The backoff's jitter; a seeded one makes every decision reproducible."""

    def start(self, records: Sequence[Record]) -> PartState:
        return PartState(tuple(records))

    def before_invoke(self, state: PartState, now: float) -> Step:
        """Before each invocation, the first included: records older than
        MaximumRecordAgeInSeconds are given up, and only they; the fresh ones are invoked.

        AWS writes approximateInvokeCount 1 for records that expired before they were ever
        invoked, and never a responseContext for RecordAgeExceeded.
        """
        if self.retry.maximum_record_age_seconds < 0:
            return Step((Invoke(state.records),), state)
        too_old = self.retry.too_old
        expired = tuple(r for r in state.records if too_old(r.arrival, now))
        if not expired:
            return Step((Invoke(state.records),), state)
        give_up = GiveUpPart(
            expired, GiveUpCondition.RECORD_AGE_EXCEEDED, max(1, state.function_errors), None
        )
        fresh = tuple(r for r in state.records if not too_old(r.arrival, now))
        if not fresh:
            return Step((give_up,), None)
        # The fresh records keep their count: they were in every invocation so far.
        state = replace(state, records=fresh)
        return Step((give_up, Invoke(fresh)), state)

    def after_result(self, state: PartState, result: InvokeResult, failed_from: int | None) -> Step:
        """After an invocation of `state.records` that ended with `result`; `failed_from` is
        the index of the lowest record the function reported failed in a successful answer
        (ReportBatchItemFailures), None when it reported none."""
        if result.ok and failed_from is None:
            return Step((Settle(state.records),), None)
        if result.ok:
            return self._partial_failure(state, result, failed_from or 0)
        if result.kind is ResultKind.FUNCTION_ERROR:
            return self._function_error(state, result)
        # Throttles and system errors were not the function's fault: they never count as
        # attempts, but the records keep ageing while they wait.
        return self._wait(replace(state, last_result=result), result)

    def _partial_failure(self, state: PartState, result: InvokeResult, failed_from: int) -> Step:
        decisions: list[Decision] = []
        if failed_from > 0:
            decisions.append(Settle(state.records[:failed_from]))
            # The rest is a new, smaller batch with a count of its own, starting at zero:
            # AWS invokes a record that keeps failing once in its batch, then
            # 1 + MaximumRetryAttempts times in the retried part.
            state = PartState(state.records[failed_from:], 0, state.failures, result)
        else:
            state = replace(state, function_errors=state.function_errors + 1, last_result=result)
            if self.retry.exhausted(state.function_errors):
                return Step((*decisions, self._exhausted(state)), None)
        step = self._wait(state, result)
        return Step((*decisions, *step.decisions), step.state)

    def _function_error(self, state: PartState, result: InvokeResult) -> Step:
        state = replace(state, function_errors=state.function_errors + 1, last_result=result)
        if self.bisect and len(state.records) > 1:
            # The split is not an attempt: each half starts its own count.
            half = len(state.records) // 2
            return Step((Split((state.records[:half], state.records[half:])),), None)
        if self.retry.exhausted(state.function_errors):
            return Step((self._exhausted(state),), None)
        return self._wait(state, result)

    @staticmethod
    def _exhausted(state: PartState) -> GiveUpPart:
        return GiveUpPart(
            state.records,
            GiveUpCondition.RETRY_ATTEMPTS_EXHAUSTED,
            state.function_errors,
            state.last_result,
        )

    def _wait(self, state: PartState, result: InvokeResult) -> Step:
        state = replace(state, failures=state.failures + 1)
        return Step((Wait(self.retry_delay(state.failures, result)),), state)

    def retry_delay(self, failures: int, result: InvokeResult) -> float:
        """Seconds before the next attempt after `failures` failures in a row, the last one
        `result`: exponential backoff, or longer when the function asked (Retry-After)."""
        delay = self.backoff.delay(failures, self.rng)
        if result.retry_after is not None:
            delay = max(delay, min(result.retry_after, self.backoff.maximum))
        return delay

    def after_final_result(self, function_errors: int, result: InvokeResult) -> bool:
        """Whether a tumbling window's final invocation is over (succeeded, or failed
        MaximumRetryAttempts + 1 times: `function_errors` counts this result too)."""
        if result.ok:
            return True
        return result.kind is ResultKind.FUNCTION_ERROR and self.retry.exhausted(function_errors)
