"""MicroBatcher: batching concurrent calls, listwise grouping, failure isolation."""

from __future__ import annotations

import asyncio

import pytest

from grm_reward import GenerationError, GenerativeRewardModel, GRMError, InputError, Request
from grm_reward.backends import ScriptedBackend
from grm_reward.batching import MicroBatcher, split_result
from tests.helpers import quality_judge

QUALITY = {"a": 2, "b": 9, "c": 5, "d": 7, "e": 4}


def make(**config):
    backend = ScriptedBackend(quality_judge(QUALITY))
    return GenerativeRewardModel(backend=backend, k=config.pop("k", 2), **config), backend


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submissions_share_one_backend_call() -> None:
    rm, backend = make()

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.05)
        results = await asyncio.gather(*(batcher.submit(Request("q", [r])) for r in "abcde"))
        return batcher, results

    batcher, results = run(main())
    assert backend.stats.calls == 1
    assert [r.votes for r in results] == [[4.0], [18.0], [10.0], [14.0], [8.0]]
    assert batcher.stats.batches == 1 and batcher.stats.completed == 5


def test_max_batch_requests_splits_batches() -> None:
    rm, backend = make()

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=10.0, max_batch_requests=2)
        results = await asyncio.gather(*(batcher.submit(Request("q", [r])) for r in "abcd"))
        return batcher, results

    batcher, results = run(main())
    assert backend.stats.calls == 2 and list(batcher.stats.batch_sizes) == [2, 2]
    assert len(results) == 4


def test_group_by_prompt_judges_a_group_listwise_and_splits_back() -> None:
    rm, backend = make(k=4)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.05, group_by_prompt=True, max_group_size=3)
        calls = [batcher.submit(Request("p1", [r])) for r in "abcd"] + [batcher.submit(Request("p2", ["e"]))]
        return batcher, await asyncio.gather(*calls)

    batcher, results = run(main())
    from grm_reward.backends.scripted import shown_responses

    shown = sorted(len(shown_responses(r.messages[-1]["content"])) for r in backend.requests)
    # p1's four responses become a listwise request of 3 and a single one; p2 stays single.
    assert [r.votes for r in results] == [[8.0], [36.0], [20.0], [28.0], [16.0]]
    assert batcher.stats.grouped_requests == 3
    assert shown.count(3) >= 1 and max(shown) == 3
    assert results[1].best == 0 and results[0].best is None  # "b" was the best of its group
    for result in results:
        assert all(s.scores is None or len(s.scores) == 1 for s in result.samples)


def test_a_bad_request_fails_alone() -> None:
    rm, _ = make(max_responses=2)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.05)
        good = batcher.submit(Request("q", ["a"]))
        bad = batcher.submit(Request("q", ["a", "b", "c"]))
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = run(main())
    assert good.votes == [4.0]
    assert isinstance(bad, InputError) and "max_responses" in str(bad)


def test_backend_failure_reaches_every_caller_and_the_batcher_keeps_serving() -> None:
    state = {"fail": True}

    def judge(call):
        if state["fail"]:
            raise GenerationError("engine down")
        return quality_judge(QUALITY)(call)

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.01)
        first = await asyncio.gather(*(batcher.submit(Request("q", [r])) for r in "ab"), return_exceptions=True)
        state["fail"] = False
        second = await batcher.submit(Request("q", ["c"]))
        return batcher, first, second

    batcher, first, second = run(main())
    assert all(isinstance(r, GenerationError) for r in first)
    assert second.votes == [5.0]
    assert batcher.stats.failed == 2 and batcher.stats.retries == 1


def test_aclose_flushes_pending_work() -> None:
    rm, _ = make()

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=60.0)
        task = asyncio.ensure_future(batcher.submit(Request("q", ["a"])))
        await asyncio.sleep(0)
        await batcher.aclose()
        return await task

    assert run(main()).votes == [4.0]


def test_split_result() -> None:
    rm, _ = make(k=2)
    full = rm.score("q", ["a", "b", "c"])
    part = split_result(full, 1)
    assert part.rewards == [full.rewards[1]] and part.votes == [18.0]
    assert part.best == 0 and part.samples[0].scores == [9]
    assert split_result(full, 0).best is None
    with pytest.raises(IndexError):
        split_result(full, 3)


class GatedBackend(ScriptedBackend):
    """A scripted judge whose generate calls wait until the test opens the gate."""

    def __init__(self, judge) -> None:
        super().__init__(judge)
        self.gate = asyncio.Event()

    async def generate(self, requests):
        await self.gate.wait()
        return await super().generate(requests)


def test_queue_depth_counts_requests_waiting_for_a_batch_slot() -> None:
    backend = GatedBackend(quality_judge(QUALITY))
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=1, max_concurrent_batches=1)
        tasks = [asyncio.ensure_future(batcher.submit(Request("q", [r]))) for r in "abc"]
        await asyncio.sleep(0.01)  # the first batch runs (held at the gate), two wait for the slot
        depth_while_busy = batcher.stats.queue_depth
        backend.gate.set()
        await asyncio.gather(*tasks)
        return depth_while_busy, batcher.stats.queue_depth

    assert run(main()) == (2, 0)


def test_a_failing_single_request_batch_is_not_run_twice() -> None:
    calls = []

    def judge(call):
        calls.append(call)
        raise GenerationError("engine down")

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0)
        return await asyncio.gather(batcher.submit(Request("q", ["a"])), return_exceptions=True), batcher

    (result,), batcher = run(main())
    assert isinstance(result, GenerationError) and len(calls) == 1 and batcher.stats.retries == 0


def test_callers_that_gave_up_are_not_scored() -> None:
    backend = GatedBackend(quality_judge(QUALITY))
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=1, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(Request("q", ["a"])))
        second = asyncio.ensure_future(batcher.submit(Request("q", ["b"])))
        await asyncio.sleep(0.01)
        second.cancel()  # e.g. its HTTP request timed out while waiting for the slot
        await asyncio.sleep(0)
        backend.gate.set()
        await first
        await batcher.aclose()

    run(main())
    assert backend.stats.calls == 1


def test_batch_size_history_is_bounded() -> None:
    rm, _ = make(k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=1)
        for _ in range(1100):
            await batcher.submit(Request("q", ["a"]))
        return batcher

    batcher = run(main())
    assert len(batcher.stats.batch_sizes) == 1024 and batcher.stats.batches == 1100


def test_arrivals_while_every_slot_is_busy_join_one_batch() -> None:
    backend = GatedBackend(quality_judge(QUALITY))
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_concurrent_batches=1)
        first = asyncio.ensure_future(batcher.submit(Request("q", ["a"])))
        await asyncio.sleep(0.01)  # the first batch is running (held at the gate)
        rest = []
        for r in "bcdebcdebc":  # a burst spread over more time than the (zero) window
            rest.append(asyncio.ensure_future(batcher.submit(Request("q", [r]))))
            await asyncio.sleep(0.002)
        backend.gate.set()
        await asyncio.gather(first, *rest)
        return batcher

    batcher = run(main())
    assert list(batcher.stats.batch_sizes) == [1, 10] and backend.stats.calls == 2


def test_submissions_in_one_loop_iteration_share_a_batch_even_with_a_zero_window() -> None:
    rm, backend = make(k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_concurrent_batches=1)
        return batcher, await batcher.submit_many([Request("q", [r]) for r in "abcde"])

    batcher, results = run(main())
    assert list(batcher.stats.batch_sizes) == [5] and backend.stats.calls == 1 and len(results) == 5


def test_closing_without_draining_fails_queued_and_running_requests_at_once() -> None:
    backend = GatedBackend(quality_judge(QUALITY))  # the gate never opens: a judge that hangs
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=1, max_concurrent_batches=1)
        running = asyncio.ensure_future(batcher.submit(Request("q", ["a"])))
        queued = asyncio.ensure_future(batcher.submit(Request("q", ["b"])))
        await asyncio.sleep(0.01)
        await asyncio.wait_for(batcher.aclose(drain=False), timeout=5)
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(GRMError, match="closed"):
            await batcher.submit(Request("q", ["c"]))
        return outcomes

    outcomes = run(main())
    assert all(isinstance(o, GRMError) and "shutting down" in str(o) for o in outcomes)


# --- isolation, deadlines, cancellation (issue 10) ---------------------------------------------------------------
def test_a_poisoned_request_of_any_exception_type_never_fails_its_batch_mates() -> None:
    """1,000 concurrent requests, one in ten poisoned with a non-GRM error: every good one is scored."""

    def judge(call):
        for response in call.responses:
            if response.startswith("key"):
                raise KeyError(response)  # a backend bug
            if response.startswith("enc"):
                raise UnicodeEncodeError("utf-8", response, 0, 1, "surrogates not allowed")
        return quality_judge(QUALITY)(call)

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge, record=False), k=1)
    texts = [("key" if i % 20 == 3 else "enc" if i % 20 == 13 else "") + "abcde"[i % 5] for i in range(1000)]

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.01, max_batch_requests=64)
        return batcher, await asyncio.gather(*(batcher.submit(Request("q", [t])) for t in texts),
                                             return_exceptions=True)

    batcher, outcomes = run(main())
    good = [o for t, o in zip(texts, outcomes) if len(t) == 1]
    bad = [o for t, o in zip(texts, outcomes) if len(t) > 1]
    assert len(bad) == 100 and all(isinstance(o, (KeyError, UnicodeEncodeError)) for o in bad)
    assert sum(isinstance(o, BaseException) for o in good) == 0
    assert [o.votes[0] for o in good] == [float(QUALITY[t]) for t in texts if len(t) == 1]
    assert batcher.stats.retries >= 1 and batcher.stats.failed == 100


class StallingBackend(ScriptedBackend):
    """A judge that stalls (every call waits for ``release``) until ``recovered`` is set; counts cancellations."""

    def __init__(self, judge) -> None:
        super().__init__(judge)
        self.release = asyncio.Event()
        self.stalled = True
        self.cancelled = 0
        self.finished_after_stall = 0

    async def generate(self, requests):
        if self.stalled:
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            self.finished_after_stall += 1
        return await super().generate(requests)


@pytest.mark.timeout(30)
def test_abandoned_batches_are_cancelled_and_recovery_after_a_stall_is_immediate() -> None:
    backend = StallingBackend(quality_judge(QUALITY))
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0, max_batch_requests=2, max_concurrent_batches=2)
        # the judge stalls: every request gives up after 0.1 s (as the server's request_timeout_s does)
        stalled = await asyncio.gather(*(asyncio.wait_for(batcher.submit(Request("q", [r])), 0.1) for r in "abcd"),
                                       return_exceptions=True)
        await asyncio.sleep(0)  # let the cancelled batches unwind
        backend.stalled = False  # the judge recovers
        backend.release.set()
        loop = asyncio.get_running_loop()
        started = loop.time()
        fresh = await asyncio.wait_for(batcher.submit(Request("q", ["b"])), 5.0)
        return batcher, stalled, fresh, loop.time() - started

    batcher, stalled, fresh, recovery_s = run(main())
    print(f"recovery after the stall: {recovery_s * 1000:.1f} ms")
    assert all(isinstance(o, asyncio.TimeoutError) for o in stalled)
    assert fresh.votes == [9.0] and recovery_s < 1.0  # not queued behind the abandoned batches
    assert backend.cancelled == 2 and backend.finished_after_stall == 0  # both stalled calls were cancelled
    assert batcher.stats.cancelled == 2 and batcher.stats.in_flight == 0


def test_a_batch_runs_under_the_latest_deadline_of_its_members() -> None:
    from grm_reward import deadlines

    seen = []

    def judge(call):
        seen.append(deadlines.remaining())
        return quality_judge(QUALITY)(call)

    rm = GenerativeRewardModel(backend=ScriptedBackend(judge), k=1)

    async def submit(batcher, response, seconds):
        with deadlines.deadline_scope(seconds):
            return await batcher.submit(Request("q", [response]))

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.05)
        await asyncio.gather(submit(batcher, "a", 5.0), submit(batcher, "b", 50.0))  # one batch, two deadlines
        await asyncio.gather(submit(batcher, "c", 5.0), submit(batcher, "d", None))  # one member has none
        return batcher

    batcher = run(main())
    assert batcher.stats.batches == 2
    assert 5.0 < seen[0] <= 50.0 and abs(seen[0] - seen[1]) < 1.0  # the most patient member's deadline, for the batch
    assert seen[2] is None and seen[3] is None


@pytest.mark.timeout(30)
def test_a_stalled_batch_fails_with_deadline_exceeded_when_its_deadline_passes() -> None:
    from grm_reward import DeadlineExceededError, deadlines

    backend = StallingBackend(quality_judge(QUALITY))
    rm = GenerativeRewardModel(backend=backend, k=1)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=0.0)
        with deadlines.deadline_scope(0.1):  # no wait_for around it: the batcher itself stops at the deadline
            outcomes = await asyncio.gather(batcher.submit(Request("q", ["a"])), batcher.submit(Request("q", ["b"])),
                                            return_exceptions=True)
        return batcher, outcomes

    batcher, outcomes = run(main())
    assert all(isinstance(o, DeadlineExceededError) for o in outcomes), outcomes
    assert backend.cancelled == 1 and batcher.stats.retries == 0  # cancelled, not retried one by one


def test_group_listwise_is_a_plain_transform() -> None:
    from grm_reward.batching import group_listwise

    reqs = [
        Request(prompt="p", responses=["a"]),
        Request(prompt="q", responses=["b"]),
        Request(prompt="p", responses=["c"]),
        Request(prompt="p", responses=["d", "e"]),  # already listwise: left alone
        Request(prompt="p", responses=["f"]),
        Request(prompt="p", responses=["g"], reference="r"),  # another reference: another group
    ]
    grouped = group_listwise(reqs, group_by_prompt=True, max_group_size=2)
    answered = sorted(i for _, members in grouped for i, _ in members)
    assert answered == list(range(len(reqs)))  # every input answered exactly once
    merged = [(r.responses, members) for r, members in grouped if len(members) > 1]
    assert merged == [(["a", "c"], [(0, 0), (2, 1)])]
    assert (reqs[4], [(4, None)]) in grouped and (reqs[3], [(3, None)]) in grouped
    flat = group_listwise(reqs, group_by_prompt=False, max_group_size=2)
    assert flat == [(r, [(i, None)]) for i, r in enumerate(reqs)]


def counting(rm):
    """Wrap ``rm.ascore_batch``: each call's requests are recorded, and ``called`` is set on the first."""
    calls: list[list[Request]] = []
    called = asyncio.Event()
    score = rm.ascore_batch

    async def ascore_batch(requests):
        calls.append(list(requests))
        called.set()
        return await score(requests)

    rm.ascore_batch = ascore_batch
    return calls, called


def test_a_complete_group_is_judged_without_waiting_for_the_window() -> None:
    """Issue 12 item 5: with group_size known, the last response of a group starts its judging at once."""
    rm, _ = make(k=2)
    calls, _ = counting(rm)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=3600.0, group_by_prompt=True, max_group_size=4, group_size=4)
        partial = [asyncio.ensure_future(batcher.submit(Request("p2", [r]))) for r in "ab"]
        group = [asyncio.ensure_future(batcher.submit(Request("p1", [r]))) for r in "abcd"]
        # If the window (an hour) were waited for, this would time out.
        results = await asyncio.wait_for(asyncio.gather(*group), timeout=60)
        waiting = [task.done() for task in partial]
        await batcher.aclose(drain=False)
        await asyncio.gather(*partial, return_exceptions=True)
        return results, waiting

    results, waiting = run(main())
    assert [r.votes for r in results] == [[4.0], [18.0], [10.0], [14.0]]
    assert len(calls) == 1 and [r.prompt for r in calls[0]] == ["p1"]  # one listwise request, the group alone
    assert calls[0][0].responses == list("abcd")
    assert waiting == [False, False]  # the incomplete group still waits for its window


def test_an_incomplete_group_still_flushes_at_the_window() -> None:
    rm, _ = make(k=2)
    calls, called = counting(rm)
    window = 0.2

    async def main():
        loop = asyncio.get_running_loop()
        batcher = MicroBatcher(rm, max_wait_s=window, group_by_prompt=True, max_group_size=4, group_size=4)
        started = loop.time()
        tasks = [asyncio.ensure_future(batcher.submit(Request("p1", [r]))) for r in "abc"]
        await called.wait()
        waited = loop.time() - started
        return await asyncio.gather(*tasks), waited

    results, waited = run(main())
    assert len(results) == 3 and len(calls) == 1 and calls[0][0].responses == list("abc")
    assert waited >= window * 0.9  # judged at the window, not before (the loop clock's resolution aside)


def test_without_group_size_a_complete_group_waits_for_the_window() -> None:
    rm, _ = make(k=2)
    calls, called = counting(rm)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=3600.0, group_by_prompt=True, max_group_size=4)
        tasks = [asyncio.ensure_future(batcher.submit(Request("p1", [r]))) for r in "abcd"]
        for _ in range(20):  # let the loop run: nothing may start the batch but the window
            await asyncio.sleep(0)
        started = called.is_set()
        await batcher.aclose()  # drain: scores what is queued
        return started, await asyncio.gather(*tasks)

    started, results = run(main())
    assert not started and len(results) == 4 and len(calls) == 1


def test_group_members_that_gave_up_do_not_count_towards_their_group() -> None:
    rm, _ = make(k=2)
    calls, _ = counting(rm)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=3600.0, group_by_prompt=True, max_group_size=4, group_size=3)
        first = [asyncio.ensure_future(batcher.submit(Request("p1", [r]))) for r in "ab"]
        await asyncio.sleep(0)
        first[0].cancel()  # its caller gave up before the group was complete
        await asyncio.gather(first[0], return_exceptions=True)
        more = [asyncio.ensure_future(batcher.submit(Request("p1", [r]))) for r in "cd"]
        results = await asyncio.wait_for(asyncio.gather(*more, first[1]), timeout=60)
        await batcher.aclose()
        return results

    results = run(main())
    assert len(results) == 3 and [sorted(r.responses) for r in calls[0]] == [["b", "c", "d"]]


def test_groups_completed_in_one_loop_iteration_share_a_batch() -> None:
    """A step's rollouts handed over at once still make few, full batches (not one per complete group)."""
    rm, _ = make(k=2)
    calls, _ = counting(rm)

    async def main():
        batcher = MicroBatcher(rm, max_wait_s=3600.0, group_by_prompt=True, max_group_size=4, group_size=4)
        return await asyncio.wait_for(
            asyncio.gather(*(batcher.submit(Request(f"p{g}", [r])) for g in range(3) for r in "abcd")), timeout=60
        )

    results = run(main())
    assert len(results) == 12 and len(calls) == 1 and [len(r.responses) for r in calls[0]] == [4, 4, 4]
