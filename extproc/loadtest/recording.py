"""What the load-test clients saw: latency samples per operation, errors by kind.

Every sample is kept (8 bytes each: a million requests cost 8 MB), so client quantiles are
exact rather than bucketed.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field

from extproc.loadtest.histograms import sample_quantile

# how much of an error's message the report keeps as its example
_EXAMPLE_CHARS = 300


@dataclass
class Operation:
    """One kind of client call (`create`, `commands.run`, an envd request, ...)."""

    seconds: array[float] = field(default_factory=lambda: array("d"))
    errors: int = 0

    def latency_ms(self) -> dict[str, float | int | None]:
        ordered = sorted(self.seconds)

        def ms(q: float) -> float | None:
            value = sample_quantile(ordered, q)
            return None if value is None else round(value * 1000, 3)

        return {
            "count": len(ordered),
            "p50": ms(0.5),
            "p90": ms(0.9),
            "p99": ms(0.99),
            "max": ms(1.0),
        }


class Recorder:
    """The clients' account; operations in first-seen order."""

    def __init__(self) -> None:
        self.operations: dict[str, Operation] = {}
        self.error_counts: Counter[str] = Counter()
        self.error_examples: dict[str, str] = {}
        self.ok = 0
        self.failed = 0

    def record_ok(self, operation: str, seconds: float) -> None:
        self._operation(operation).seconds.append(seconds)
        self.ok += 1

    def record_error(self, operation: str, kind: str, message: str) -> None:
        """`kind` groups errors (an exception's class, `HTTP 502`); `message` is kept once
        per kind as an example."""
        self._operation(operation).errors += 1
        key = f"{operation}: {kind}"
        self.error_counts[key] += 1
        self.error_examples.setdefault(key, " ".join(message.split())[:_EXAMPLE_CHARS])
        self.failed += 1

    def _operation(self, name: str) -> Operation:
        operation = self.operations.get(name)
        if operation is None:
            operation = self.operations[name] = Operation()
        return operation

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "errors": self.failed,
            "operations": {
                name: {"ok": len(op.seconds), "errors": op.errors, "latency_ms": op.latency_ms()}
                for name, op in self.operations.items()
            },
            "errors_by_kind": {
                key: {"count": count, "example": self.error_examples[key]}
                for key, count in self.error_counts.most_common()
            },
        }
