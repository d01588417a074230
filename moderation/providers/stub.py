"""The ``stub`` provider: deterministic verdicts for tests, steered by markers in the post's text.

``[ai:0.85]`` scores 0.85; ``[ai:error]`` and ``[ai:garbage]`` raise ProviderError; ``[ai:slow:2]`` sleeps
two seconds first. Without a score marker the score is ``settings.AI_STUB_SCORE``. get_provider()
refuses it outside DEBUG or tests.
"""

from __future__ import annotations

import re
import time

from django.conf import settings

from .base import Provider, ProviderError, ProviderResult, ReviewInput

MARKER = re.compile(r"\[ai:(error|garbage|slow:\d+(?:\.\d+)?|\d+(?:\.\d+)?)\]")


class StubProvider(Provider):
    name = "stub"

    def review(self, item: ReviewInput) -> ProviderResult:
        markers = MARKER.findall(item.text or "")
        score = float(settings.AI_STUB_SCORE)
        for marker in markers:
            if marker == "error":
                raise ProviderError("The stub provider failed as asked ([ai:error]).")
            if marker == "garbage":
                raise ProviderError("The stub provider returned garbage as asked ([ai:garbage]).")
            if marker.startswith("slow:"):
                time.sleep(float(marker.removeprefix("slow:")))
            else:
                score = float(marker)
        score = min(1.0, max(0.0, score))
        return ProviderResult(
            provider=self.name,
            model="stub",
            version="1",
            scores={"stub": score},
            overall=score,
            labels=[f"stub: {score:.2f}"] if score > 0 else [],
            raw={"markers": markers},
        )
