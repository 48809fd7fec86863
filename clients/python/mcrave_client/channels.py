"""`--present` for the client CLIs: channel indices or the model's channel names.

The SDK cannot import the core (no torch here), so the one rule every CLI follows is written
down twice, here and in `mcrave.present.parse_present`; `tests/test_sdk_units.py` feeds both
the same cases. Names come from the server (`ModelInfo.channel_names`).
"""

from __future__ import annotations

from collections.abc import Sequence

from mcrave_client.errors import ClientError


def parse_channel_set(
    spec: str | Sequence[int], channels: int, names: Sequence[str]
) -> tuple[int, ...]:
    """ "1,3", "R", "L,ch2" or already-parsed indices -> sorted indices; errors name the token."""
    tokens = (
        [t.strip() for t in spec.split(",") if t.strip()] if isinstance(spec, str) else list(spec)
    )
    if not tokens:
        raise ClientError("--present: the present set is empty: at least one channel must be fed")
    chosen: list[int] = []
    for token in tokens:
        if isinstance(token, str) and token in names:
            index = list(names).index(token)
        elif isinstance(token, int) or token.isdigit():
            index = int(token)
        else:
            raise ClientError(
                f"--present: {token!r} is neither a channel index nor one of {list(names)}"
            )
        if not 0 <= index < channels:
            raise ClientError(
                f"--present: channel {index} out of range for a {channels}-channel model "
                f"(0..{channels - 1})"
            )
        if index in chosen:
            raise ClientError(f"--present: channel {index} given twice")
        chosen.append(index)
    return tuple(sorted(chosen))
