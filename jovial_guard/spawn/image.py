"""The image a spawn will really start, so the policy decides that one.

Why not ``spawner.image``: DockerSpawner replaces it with ``user_options["image"]``
(resolved through ``allowed_images``) inside ``start()``, after the pre-spawn hook. Deciding
``spawner.image`` would let an admin's ``allowed_images`` list run images no decision saw
(the CVE-2023-48311 class). The hook resolves the choice the way ``start()`` will, with the
spawner's own ``check_allowed``; ``GuardedDockerSpawner`` refuses to start anything else.
"""

from __future__ import annotations

from typing import Any

from ..errors import MalformedInput


async def final_image(spawner: Any) -> str:
    """The image ``spawner.start()`` will use: the user's allowed choice, else ``spawner.image``.

    Raises MalformedInput for a choice that is not a string, and lets DockerSpawner's own
    refusal (``HTTPError`` 400: not in ``allowed_images``) through unchanged.
    """
    choice = (getattr(spawner, "user_options", None) or {}).get("image")
    if not choice:
        return str(spawner.image)
    if not isinstance(choice, str):
        raise MalformedInput(f"image must be a string, got {type(choice).__name__}",
                             where="user_options.image")
    check_allowed = getattr(spawner, "check_allowed", None)
    if check_allowed is None:
        raise MalformedInput("this spawner does not let users choose an image",
                             where="user_options.image")
    return str(await check_allowed(choice))
