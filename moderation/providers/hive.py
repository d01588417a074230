"""The ``hive`` provider: Hive's synchronous moderation API (v2 ``task/sync``).

Images, posters, and frames sampled from each video and each animated image (``frames.visual_sources``,
the same frames the local provider scores) are uploaded one by one as multipart ``media`` to
the visual project; the text goes as ``text_data`` to the text project (Hive keeps a key per project:
``HIVE_TEXT_API_KEY`` falls back to ``HIVE_API_KEY``). 429, 5xx, timeouts and connection errors are
retried with exponential backoff within a bounded budget; anything else unexpected is a ProviderError,
so the review actor retries later and nothing passes unreviewed.
"""

from __future__ import annotations

import email.utils
import logging
import mimetypes
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from django.conf import settings

from .base import Provider, ProviderError, ProviderResult, ReviewInput
from .frames import visual_sources

logger = logging.getLogger(__name__)

# Hive visual class -> (our category, weight); category score = max over classes and frames of
# score × weight. As for the local provider, 1.0 means a confident hit quarantines on its own
# (revoke threshold 0.7) and ≤ 0.6 means at most a human look (review threshold 0.3). Hive's negative
# classes (no_*, general_not_nsfw_not_suggestive) and heads we do not moderate (drugs, gambling...) are
# left out.
VISUAL_CLASSES: dict[str, tuple[str, float]] = {
    "general_nsfw": ("nudity_explicit", 1.0),
    "yes_sexual_activity": ("nudity_explicit", 1.0),
    "yes_realistic_nsfw": ("nudity_explicit", 1.0),
    "yes_female_nudity": ("nudity_explicit", 1.0),
    "yes_male_nudity": ("nudity_explicit", 1.0),
    "yes_sexual_intent": ("sexual", 0.8),
    "general_suggestive": ("sexual", 0.6),
    "yes_undressed": ("sexual", 0.6),
    "yes_sex_toy": ("sexual", 0.6),
    "yes_female_underwear": ("sexual", 0.4),
    "yes_male_underwear": ("sexual", 0.4),
    "yes_bra": ("sexual", 0.4),
    "yes_panties": ("sexual", 0.4),
    "yes_bulge": ("sexual", 0.3),
    "yes_cleavage": ("sexual", 0.2),
    "yes_female_swimwear": ("sexual", 0.2),
    "yes_male_shirtless": ("sexual", 0.1),
    "very_bloody": ("violence", 1.0),
    "human_corpse": ("violence", 1.0),
    "yes_self_harm": ("violence", 1.0),
    "yes_fight": ("violence", 0.6),
    "gun_in_hand": ("violence", 0.6),
    "a_little_bloody": ("violence", 0.5),
    "knife_in_hand": ("violence", 0.5),
    "yes_emaciated_body": ("violence", 0.5),
    "yes_nazi": ("hate", 1.0),
    "yes_kkk": ("hate", 1.0),
    "yes_terrorist": ("hate", 1.0),
    "yes_confederate": ("hate", 0.5),
    "yes_middle_finger": ("toxicity", 0.4),
}
# Hive text heads answer a severity level (3 most severe, 0 benign, -1 language not supported) rather
# than a probability. Level 3 (e.g. explicit sex, slurs, threats) quarantines, level 2 (sexual intent,
# degrading comments) goes to a human, level 1 (flirting, informational) passes.
TEXT_CLASSES: dict[str, str] = {
    "sexual": "sexual",
    "hate": "hate",
    "violence": "violence",
    "bullying": "toxicity",
}
TEXT_LEVEL_SCORES = {0: 0.0, 1: 0.2, 2: 0.6, 3: 1.0}
# Binary text heads (score 0 or 1) we act on.
TEXT_BINARY_CLASSES: dict[str, str] = {"child_exploitation": "sexual"}
# A profanity word-list match in ``text_filters``: certain about the word, not about harm.
PROFANITY_MATCH_SCORE = 0.9
TEXT_CHUNK_CHARS = 1024  # Hive's default maximum text input
MAX_LABELS = 20


@dataclass
class _Scored:
    """What one Hive answer said about one source, mapped to our categories."""

    source: str
    categories: dict[str, tuple[float, str]] = field(default_factory=dict)  # category -> (score, class)
    classes: dict[str, float] = field(default_factory=dict)  # raw scores of the classes we map
    models: set[str] = field(default_factory=set)

    def add(self, category: str, score: float, hive_class: str) -> None:
        score = min(1.0, max(0.0, score))
        if score > self.categories.get(category, (0.0, ""))[0]:
            self.categories[category] = (score, hive_class)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _text_chunks(text: str) -> list[str]:
    """Split at whitespace into pieces Hive accepts."""
    chunks: list[str] = []
    rest = text.strip()
    while rest:
        if len(rest) <= TEXT_CHUNK_CHARS:
            chunks.append(rest)
            break
        cut = rest.rfind(" ", 0, TEXT_CHUNK_CHARS)
        cut = cut if cut > TEXT_CHUNK_CHARS // 2 else TEXT_CHUNK_CHARS
        chunks.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    return chunks


class HiveProvider(Provider):
    name = "hive"

    def __init__(self) -> None:
        self._local = threading.local()  # one requests.Session (and its keep-alive pool) per thread

    @property
    def session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    # --- HTTP ---------------------------------------------------------------------------------------

    def _post(self, *, key: str, deadline: float, stats: dict[str, int], **body: Any) -> dict[str, Any]:
        url = settings.HIVE_API_URL
        timeout = float(settings.HIVE_TIMEOUT_SECONDS)
        attempts = max(1, int(settings.HIVE_MAX_ATTEMPTS))
        backoff = float(settings.HIVE_BACKOFF_SECONDS)
        max_wait = float(settings.HIVE_MAX_RETRY_WAIT_SECONDS)
        headers = {"authorization": f"token {key}", "accept": "application/json"}
        problem = "no attempt made"
        for attempt in range(1, attempts + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderError(f"Hive gave no answer within the time budget ({problem}).")
            stats["requests"] += 1
            wait = backoff * 2 ** (attempt - 1) * random.uniform(1.0, 1.25)
            try:
                response = self.session.post(url, headers=headers, timeout=min(timeout, remaining), **body)
            except requests.Timeout:
                problem = f"timed out after {min(timeout, remaining):.1f}s"
            except requests.ConnectionError as exc:
                problem = f"connection failed: {exc.__class__.__name__}"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise ProviderError(
                            f"Hive answered with garbage instead of JSON: {response.text[:120]!r}"
                        ) from None
                if status in (401, 403):
                    raise ProviderError(f"Hive rejected the API key (HTTP {status}).")
                if status != 429 and status < 500:
                    raise ProviderError(f"Hive refused the request (HTTP {status}): {response.text[:200]!r}")
                problem = f"HTTP {status}"
                retry_after = _retry_after(response)
                if retry_after is not None:
                    wait = retry_after
            if attempt == attempts:
                break
            wait = min(wait, max_wait)
            if time.monotonic() + wait >= deadline:
                raise ProviderError(
                    f"Hive is unavailable ({problem}); retrying would exceed the time budget."
                )
            logger.info("hive attempt %d/%d: %s; retrying in %.2fs", attempt, attempts, problem, wait)
            time.sleep(wait)
        raise ProviderError(f"Hive is unavailable after {attempts} attempts ({problem}).")

    # --- Parsing ------------------------------------------------------------------------------------

    @staticmethod
    def _outputs(payload: Any) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(response, output) pairs of a v2 sync answer; ProviderError when it is not that shape."""
        try:
            statuses = payload["status"]
            if not isinstance(statuses, list) or not statuses:
                raise TypeError("empty status list")
            pairs = []
            for entry in statuses:
                task_status = entry.get("status") or {}
                if str(task_status.get("code", "0")) != "0":
                    raise ProviderError(f"Hive could not classify the input: {task_status.get('message')!r}")
                response = entry["response"]
                outputs = response["output"]
                if not isinstance(outputs, list):
                    raise TypeError("output is not a list")
                for output in outputs:
                    if not isinstance(output["classes"], list):
                        raise TypeError("classes is not a list")
                    pairs.append((response, output))
            return pairs
        except ProviderError:
            raise
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderError(f"Hive answered with an unexpected shape (garbage): {exc!r}") from None

    @staticmethod
    def _classes(output: dict[str, Any]) -> list[tuple[str, float]]:
        found = []
        for item in output["classes"]:
            if not isinstance(item, dict) or not isinstance(item.get("class"), str):
                raise ProviderError(f"Hive answered with an unexpected class entry (garbage): {item!r}")
            score = item.get("score")
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise ProviderError(f"Hive answered with a non-numeric score (garbage): {item!r}")
            found.append((item["class"], float(score)))
        return found

    @staticmethod
    def _model(response: dict[str, Any]) -> str | None:
        model = (response.get("input") or {}).get("model") if isinstance(response, dict) else None
        if not model:
            return None
        model_version = (response.get("input") or {}).get("model_version")
        return f"{model}@{model_version}" if model_version is not None else str(model)

    def _score_visual(self, source: str, payload: Any) -> _Scored:
        scored = _Scored(source)
        for response, output in self._outputs(payload):  # video answers hold one output per timestamp
            if model := self._model(response):
                scored.models.add(model)
            for hive_class, score in self._classes(output):
                if hive_class in VISUAL_CLASSES:
                    category, weight = VISUAL_CLASSES[hive_class]
                    scored.classes[hive_class] = max(scored.classes.get(hive_class, 0.0), score)
                    scored.add(category, score * weight, hive_class)
        if not scored.classes:
            # Hive scores every class of its model; an answer naming none we know is a changed model
            # or a broken answer, never "clean" (fail closed).
            raise ProviderError(
                f"Hive's answer for {source} has no class we know (garbage or a changed model)."
            )
        return scored

    def _score_text(self, source: str, payload: Any) -> _Scored:
        scored = _Scored(source)
        for response, output in self._outputs(payload):
            if model := self._model(response):
                scored.models.add(model)
            for hive_class, level in self._classes(output):
                if hive_class in TEXT_CLASSES:
                    score = TEXT_LEVEL_SCORES.get(int(level), 0.0)  # -1: language not supported
                    scored.add(TEXT_CLASSES[hive_class], score, f"{hive_class} level {int(level)}")
                elif hive_class in TEXT_BINARY_CLASSES:
                    scored.add(TEXT_BINARY_CLASSES[hive_class], level, hive_class)
                else:
                    continue
                scored.classes[hive_class] = max(scored.classes.get(hive_class, -1.0), level)
            filters = response.get("text_filters") or []
            if not isinstance(filters, list):
                raise ProviderError("Hive answered with an unexpected text_filters shape (garbage).")
            if any(isinstance(f, dict) and f.get("type") == "profanity" for f in filters):
                scored.add("profanity", PROFANITY_MATCH_SCORE, "profanity filter")
                scored.classes["profanity_filter"] = 1.0
        return scored

    # --- Review -------------------------------------------------------------------------------------

    def review(self, item: ReviewInput) -> ProviderResult:
        visual_key = settings.HIVE_API_KEY
        text_key = settings.HIVE_TEXT_API_KEY or visual_key
        has_visual = bool(item.image_paths or item.poster_paths or item.video_paths)
        has_text = bool(item.text and item.text.strip())
        if (has_visual and not visual_key) or (has_text and not text_key):
            raise ProviderError("Hive API key is not configured (set HIVE_API_KEY).")
        budget = float(settings.HIVE_TOTAL_BUDGET_SECONDS)
        deadline = time.monotonic() + budget
        stats = {"requests": 0}
        results: list[_Scored] = []

        def send_media(source: str, path: Path) -> None:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ProviderError(
                    f"Cannot read {path.name} to send to Hive: {exc.strerror or exc}"
                ) from exc
            mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            payload = self._post(
                key=visual_key, deadline=deadline, stats=stats, files={"media": (path.name, data, mime)}
            )
            results.append(self._score_visual(source, payload))

        visual = None
        if has_visual:
            with tempfile.TemporaryDirectory(prefix="postflow-hive-") as tmp:
                visual = visual_sources(item, Path(tmp))
                for source, path in visual.pictures:
                    send_media(source, path)
        if has_text:
            for i, chunk in enumerate(_text_chunks(item.text), 1):
                payload = self._post(key=text_key, deadline=deadline, stats=stats, data={"text_data": chunk})
                results.append(self._score_text("text" if i == 1 else f"text part {i}", payload))

        scores: dict[str, float] = {}
        findings: list[tuple[float, str]] = []
        for scored in results:
            for category, (score, hive_class) in scored.categories.items():
                scores[category] = round(max(scores.get(category, 0.0), score), 4)
                if score >= 0.01:
                    findings.append((score, f"{category}: {hive_class} {score:.2f} ({scored.source})"))
        findings.sort(key=lambda finding: finding[0], reverse=True)
        models = sorted({model for scored in results for model in scored.models})
        return ProviderResult(
            provider=self.name,
            model="hive-v2-sync",
            version="; ".join(models),
            scores=scores,
            overall=max(scores.values(), default=0.0),
            labels=[label for _, label in findings[:MAX_LABELS]],
            raw={
                "sources": {scored.source: scored.classes for scored in results},
                "requests": stats["requests"],
                "frames": visual.frames if visual else {},
                "animations": visual.animations if visual else {},
            },
        )
