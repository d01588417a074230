"""Several providers as one (``AI_PROVIDER=local,hive``): every provider is asked and the highest score
wins, per category and overall. Any provider failing fails the review (fail closed)."""

from __future__ import annotations

from .base import Provider, ProviderResult, ReviewInput


class CombinedProvider(Provider):
    def __init__(self, providers: list[Provider]):
        self.providers = list(providers)
        self.name = "+".join(provider.name for provider in self.providers)

    def review(self, item: ReviewInput) -> ProviderResult:
        results = [provider.review(item) for provider in self.providers]
        scores: dict[str, float] = {}
        for result in results:
            for category, score in result.scores.items():
                scores[category] = max(scores.get(category, 0.0), score)
        # The most alarming provider's findings first, each tagged with who found it.
        ranked = sorted(results, key=lambda result: result.overall, reverse=True)
        return ProviderResult(
            provider=self.name,
            model="+".join(result.model for result in results),
            version="; ".join(f"{result.provider}: {result.version}" for result in results if result.version),
            scores=scores,
            overall=max(result.overall for result in results),
            labels=[f"[{result.provider}] {label}" for result in ranked for label in result.labels],
            raw={
                result.provider: {
                    "model": result.model,
                    "version": result.version,
                    "scores": result.scores,
                    "overall": result.overall,
                    "labels": result.labels,
                    "raw": result.raw,
                }
                for result in results
            },
        )
