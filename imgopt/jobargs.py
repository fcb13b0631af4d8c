"""What a job's arguments may hold that the worker running it fills in (imported by the worker
processes, so nothing here may pull in asyncio or libvips)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class _Placeholder:
    """An argument a worker replaces when it starts the job; pickled as a reference to the
    module's own object, so it keeps its identity in a worker process (imgopt/workers.py)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"pool.{self.name}"


#: Placeholder argument for ``run``: replaced by the job's deadline (a ``time.monotonic()``
#: value) when a worker starts it.
DEADLINE = _Placeholder("DEADLINE")
#: Placeholder argument: replaced by the worker's memo of resized originals (transform.ResizedMemo).
MEMO = _Placeholder("MEMO")

#: Called after each job with its result (None when it raised) and its seconds on the worker.
Observer = Callable[[Any, float], None]


def substitute(args: tuple[Any, ...], deadline: float | None, memo: Any) -> tuple[Any, ...]:
    return tuple(deadline if a is DEADLINE else memo if a is MEMO else a for a in args)


class Step:
    """A function named by its module and name, imported where it is first called: the server
    hands image steps to worker processes without importing libvips itself."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        self._fn: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            import importlib

            self._fn = getattr(importlib.import_module(self.module), self.name)
        return self._fn(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return Step, (self.module, self.name)

    def __repr__(self) -> str:
        return f"Step({self.module}.{self.name})"


TRANSFORM = Step("imgopt.transform", "process")
PLACEHOLDER = Step("imgopt.placeholder", "process")
