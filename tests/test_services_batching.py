"""The dynamic batcher really batches, and a batched stream equals the same stream run alone."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from services_helpers import (
    ServerThread,
    audio,
    config,
    decode,
    encode,
    latents_array,
    publish_tiny,
    with_audio,
)

from services.common.batcher import BatchGroup
from services.common.limits import Limits
from services.decoder.servicer import SERVICE as DECODER
from services.encoder.servicer import SERVICE as ENCODER


def test_batch_group_joins_same_key_only_and_respects_max_batch() -> None:
    async def main() -> list[list[tuple]]:
        batches: list[list[tuple]] = []

        def run(payloads):
            batches.append(list(payloads))
            return [p[1] * 10 for p in payloads]

        group = BatchGroup("t", max_batch=3, max_wait_s=0.05, observe=lambda *a: None)
        for _ in range(5):
            group.join()
        results = await asyncio.gather(
            *(group.submit(("k", 1), run, ("k", i), 0.1) for i in range(4)),
            group.submit(("other", 2), run, ("other", 9), 0.1),
        )
        assert results == [0, 10, 20, 30, 90]
        group.close()
        return batches

    batches = asyncio.run(main())
    assert sorted(len(b) for b in batches) == [
        1,
        1,
        3,
    ]  # 3 (max) + the 4th alone; "other" never mixed in
    assert all(len({p[0] for p in b}) == 1 for b in batches)


def test_batch_group_waits_at_most_max_wait_and_skips_cancelled() -> None:
    async def main() -> None:
        group = BatchGroup("t", max_batch=8, max_wait_s=0.02, observe=lambda *a: None)
        for _ in range(3):  # three streams open, only one submits: it runs after max_wait alone
            group.join()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await group.submit("k", lambda ps: [p + 1 for p in ps], 1, 0.1) == 2
        assert 0.015 <= loop.time() - t0 < 1.0
        doomed = asyncio.ensure_future(group.submit("k", lambda ps: [p + 1 for p in ps], 5, 0.1))
        await asyncio.sleep(0)
        doomed.cancel()
        assert (
            await group.submit("k", lambda ps: [len(ps)], 0, 0.1) == 1
        )  # the cancelled step is gone
        group.close()

    asyncio.run(main())


def test_batch_group_lone_stream_never_waits() -> None:
    """One open stream: its step runs at once, however long max_wait is (the test would hang
    for an hour otherwise); a second open stream brings the wait back until both have a step
    pending, and then they run as one batch."""

    def sizes(payloads):
        return [len(payloads)] * len(payloads)

    async def main() -> None:
        group = BatchGroup("t", max_batch=8, max_wait_s=3600, observe=lambda *a: None)
        group.join()
        assert await asyncio.wait_for(group.submit("k", sizes, 0, 0.1), 30) == 1
        group.join()
        first = asyncio.ensure_future(group.submit("k", sizes, 0, 0.1))
        await asyncio.sleep(0.05)
        assert not first.done()  # waits for the other open stream
        second = group.submit("k", sizes, 1, 0.1)
        assert await asyncio.wait_for(asyncio.gather(first, second), 30) == [2, 2]
        group.leave()
        assert await asyncio.wait_for(group.submit("k", sizes, 0, 0.1), 30) == 1
        group.close()

    asyncio.run(main())


def test_batch_group_runs_the_servers_only_stream_on_the_loop_one_step_at_a_time() -> None:
    """The server's only stream runs its forwards on the loop thread (no thread hops), but each
    result comes on a later loop pass, so other tasks run between the steps of a long clip; with
    a second stream open, forwards go back to the worker thread."""
    threads: list[int] = []

    def run(payloads):
        threads.append(threading.get_ident())
        return list(payloads)

    async def main() -> None:
        group = BatchGroup("t", 8, 0.02, lambda *a: None, alone=lambda: group.streams == 1)
        group.join()
        passes = 0

        async def other_task() -> None:
            nonlocal passes
            while True:
                passes += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_task())
        seen = []
        for i in range(3):
            assert await group.submit("k", run, i, 0.1) == i
            seen.append(passes)
        assert seen[0] < seen[1] < seen[2]
        group.join()
        both = [group.submit("k", run, i, 0.1) for i in range(2)]
        assert await asyncio.wait_for(asyncio.gather(*both), 30) == [0, 1]
        ticker.cancel()
        group.close()

    asyncio.run(main())
    loop_thread = threading.get_ident()
    assert threads[:3] == [loop_thread] * 3 and threads[3] != loop_thread


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg") / "models"
    root.mkdir()
    publish_tiny(root)
    limits = Limits(max_batch=8, max_wait_s=0.02)
    enc, dec = (
        ServerThread(ENCODER, root, limits=limits),
        ServerThread(DECODER, root, limits=limits),
    )
    yield enc, dec
    enc.stop()
    dec.stop()


def test_concurrent_streams_batch_and_match_solo_runs(servers) -> None:
    enc, dec = servers
    streams = 6
    inputs = [audio(8192, seed=100 + i) for i in range(streams)]
    presents = [(0, 1), (1,), (0,), (0, 1), (1,), (0,)]
    results: list = [None] * streams
    barrier = threading.Barrier(streams)

    def dec_input(i: int, latents: list) -> tuple:
        """Odd streams decode latent-only, even ones with their present audio: mixed batches."""
        if i % 2:
            return config(present=(), seed=i), latents
        return config(present=presents[i], seed=i), with_audio(
            latents, inputs[i], presents[i], 1024
        )

    def run(i: int) -> None:
        barrier.wait()
        _, latents = encode(enc.target, config(present=presents[i]), inputs[i])
        _, y = decode(dec.target, *dec_input(i, latents))
        results[i] = (latents_array(latents, 8), y)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for server in (enc, dec):
        count = server.sample("mcrave_batch_size_count", {"model": "tiny"})
        total = server.sample("mcrave_batch_size_sum", {"model": "tiny"})
        assert count > 0 and total / count > 1.5, (
            f"{server.running.service.name}: mean batch {total / count:.2f}"
        )
    for i in range(streams):  # each stream alone gives the same latents and audio
        _, latents = encode(enc.target, config(present=presents[i]), inputs[i])
        _, y = decode(dec.target, *dec_input(i, latents))
        np.testing.assert_allclose(results[i][0], latents_array(latents, 8), atol=1e-5)
        np.testing.assert_allclose(results[i][1], y, atol=1e-5)
