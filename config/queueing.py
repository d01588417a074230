"""Sending Dramatiq messages by actor name, after the surrounding transaction commits.

Services never import the modules that declare actors (``media.tasks``, ``moderation.tasks``): they
name the actor, as Zulip's ``queue_event_on_commit`` names a queue. Each app's ``AppConfig.ready``
imports its own tasks module, so every process (web, worker, management command) has the actors
declared on its broker before any message is sent.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from django.db import transaction

logger = logging.getLogger("postflow.queueing")


def send(actor_name: str, *args: Any, **kwargs: Any) -> bool:
    """Send one message to the actor declared as ``actor_name`` now.

    Returns True when the broker took it. A broker failure is logged and returns False: the caller's
    row is already committed in a state the sweep recognises (``pending`` media, a ``pending_review``
    post with no review), so nothing is lost. An unknown actor name is a programming error and raises
    ``dramatiq.errors.ActorNotFound``.
    """
    actor = dramatiq.get_broker().get_actor(actor_name)
    try:
        actor.send(*args, **kwargs)
    except Exception as exc:
        logger.warning("could not queue %s%r (the sweep will retry): %s", actor_name, args, exc)
        return False
    return True


def send_on_commit(actor_name: str, *args: Any, **kwargs: Any) -> None:
    """Queue ids, never objects, once the current transaction commits (immediately outside one)."""
    transaction.on_commit(lambda: send(actor_name, *args, **kwargs))
