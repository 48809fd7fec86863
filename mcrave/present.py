"""Present sets: which of a model's N channels are fed. The one rule for every entry point.

The CLI (`--present`), the evaluation, `infer_array` and the services (stream configs, the Open
Inference Protocol's `present` input) all check present sets here, so they accept and refuse the
same sets with the same words. The torch-free SDK cannot import the core and keeps a twin
(`mcrave_client/channels.py`); `tests/test_sdk_units.py` feeds both the same cases. Errors are
ValueError, each naming what was wrong: `what` says where the set came from (an option, a field).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def check_present(
    indices: Iterable[int], channels: int, *, what: str = "present", ascending: bool = False
) -> tuple[int, ...]:
    """Checked channel indices, ascending: at least one, each in 0..channels-1, none twice.

    With `ascending` the indices must already come in ascending order: on the wire the audio's
    columns follow the present set, so a reordered set would silently swap channels.
    """
    given = [int(i) for i in indices]
    if not given:
        raise ValueError(f"{what}: the present set is empty: at least one channel must be fed")
    seen: set[int] = set()
    for index in given:
        if not 0 <= index < channels:
            raise ValueError(
                f"{what}: channel {index} out of range for a {channels}-channel model "
                f"(0..{channels - 1})"
            )
        if index in seen:
            raise ValueError(f"{what}: channel {index} given twice")
        seen.add(index)
    chosen = tuple(sorted(given))
    if ascending and tuple(given) != chosen:
        raise ValueError(
            f"{what}: {given} must be strictly increasing (the audio's columns follow it)"
        )
    return chosen


def parse_present(
    spec: str | None, channels: int, names: Sequence[str], *, what: str = "--present"
) -> tuple[int, ...]:
    """Present-set text: comma-separated channel indices or names ("1,3", "R", "L,ch2") ->
    checked indices, ascending; None (nothing given) is every channel. Errors name the token."""
    if spec is None:
        return tuple(range(channels))
    indices = []
    for token in (t.strip() for t in spec.split(",") if t.strip()):
        if token in names:
            indices.append(list(names).index(token))
        elif token.isdigit():
            indices.append(int(token))
        else:
            raise ValueError(
                f"{what}: {token!r} is neither a channel index nor one of {list(names)}"
            )
    return check_present(indices, channels, what=what)
