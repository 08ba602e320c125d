"""OSErrors re-raised as domain errors: how each file surface (picod's filesystem and
`/files`, the volume content API) turns a failed file operation into the answer its caller
gets. Each surface keeps its own meanings (its messages name paths its own way); an OSError
with no meaning there is a bug and escapes unchanged, to be logged and answered 500.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from extproc.core.errors import DomainError


@contextmanager
def reraised(meaning: Callable[[OSError], DomainError | None]) -> Iterator[None]:
    """Re-raise an OSError as `meaning(error)`, or unchanged when that is None."""
    try:
        yield
    except OSError as error:
        mapped = meaning(error)
        if mapped is None:
            raise
        raise mapped from error
