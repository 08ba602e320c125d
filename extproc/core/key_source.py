"""What a source of API keys publishes for the Check: one immutable index, swapped in whole.

The edge has two sources, the key files it polls (edge/keystore.py) and the informers on
the key Secret and ConfigMap (k8s/keys.py). Both follow one rule, kept here so it cannot
drift between them: a document that does not parse keeps the last good index (a typo must
not lock every tenant out), and each distinct problem, or an invalid `quotas` entry (which
only loses the quotas), is logged once rather than on every poll or event.
"""

from __future__ import annotations

import asyncio
import logging

from extproc.core.api_keys import EMPTY_INDEX, KeyIndex

log = logging.getLogger(__name__)


class KeySource:
    def __init__(self) -> None:
        # Check reads this one attribute; a new index replaces it whole, never in place.
        self.index: KeyIndex = EMPTY_INDEX
        # Set once the first good index is in: the edge serves no Check before it.
        self.loaded = asyncio.Event()
        self._last_problem: str | None = None
        self._last_quota_problem = ""

    def keep_previous(self, problem: str) -> None:
        """The documents did not parse: go on serving the index already published."""
        if problem != self._last_problem:
            log.warning("keeping the previous API key index: %s", problem)
            self._last_problem = problem

    def publish(self, index: KeyIndex) -> bool:
        """Swap `index` in; True if it is the first one."""
        self._last_problem = None
        self.index = index
        if index.quotas_error and index.quotas_error != self._last_quota_problem:
            log.warning("%s", index.quotas_error)
        self._last_quota_problem = index.quotas_error
        first = not self.loaded.is_set()
        self.loaded.set()
        return first
