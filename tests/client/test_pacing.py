"""Pacing: the rate limit learned from 429s, shared by every thread of a process (a fake clock here;
against the real rate-limited server in tests/server/test_client_pacing.py)."""

from __future__ import annotations

import threading

import pytest

from moondream_nb.client.pacing import FORGET_AFTER, Pacer, pacer_for, policy_interval


class Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_policy_header_sets_the_interval():
    assert policy_interval({"RateLimit-Policy": "2;w=1"}) == 0.5
    assert policy_interval({"RateLimit-Policy": "10"}) == 0.1
    assert policy_interval({"X-RateLimit-Policy": "120;w=60"}) == 0.5
    assert policy_interval({"RateLimit-Policy": "0;w=1"}) is None and policy_interval({}) is None


def test_unpaced_until_a_429_then_spaced_by_the_policy_after_retry_after():
    clock = Clock()
    pacer = Pacer(clock, clock.sleep)
    starts = [pacer.wait() for _ in range(5)]
    assert starts == [100.0] * 5 and clock.slept == [] and pacer.rate is None  # no limit known: no waiting
    pacer.observe(starts[4], 429, {"RateLimit-Policy": "2;w=1"}, retry_after=1.0)
    assert pacer.rate == 2.0
    later = [pacer.wait() for _ in range(4)]
    assert later == [101.0, 101.5, 102.0, 102.5]  # everyone held for Retry-After, then one per 0.5 s
    pacer.observe(later[-1], 200, {}, None)  # successes change nothing
    assert pacer.rate == 2.0


def test_without_a_policy_the_rate_is_what_got_through_in_the_last_second():
    clock = Clock()
    pacer = Pacer(clock, clock.sleep)
    starts = [pacer.wait() for _ in range(4)]  # four workers at once against 2 requests/s
    clock.now += 0.01
    pacer.observe(starts[2], 429, {}, retry_after=1.0)
    assert pacer.rate == 3.0  # as far as it knows yet: three may have passed
    pacer.observe(starts[3], 429, {}, retry_after=1.0)
    assert pacer.rate == 2.0  # the second refusal says two did
    assert [pacer.wait() for _ in range(3)] == pytest.approx([101.01, 101.51, 102.01])


def test_a_learned_limit_is_forgotten_a_minute_after_the_last_429():
    clock = Clock()
    pacer = Pacer(clock, clock.sleep)
    pacer.observe(pacer.wait(), 429, {"RateLimit-Policy": "1;w=1"}, retry_after=1.0)
    assert pacer.rate == 1.0
    clock.now += FORGET_AFTER + 1
    pacer.wait()
    assert pacer.rate is None


def test_threads_share_one_pace():
    clock = Clock()
    lock = threading.Lock()
    pacer = Pacer(clock, lambda s: None)  # the reserved start times are what matter here
    pacer.observe(pacer.wait(), 429, {"RateLimit-Policy": "4;w=1"}, retry_after=0.0)
    got: list[float] = []

    def worker() -> None:
        for _ in range(5):
            t = pacer.wait()
            with lock:
                got.append(t)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got.sort()
    assert len(got) == 20 and all(b - a == pytest.approx(0.25) for a, b in zip(got, got[1:]))


def test_one_pacer_per_origin_and_key():
    a = pacer_for(("https", "api.example", 443), "key-1")
    assert pacer_for(("https", "api.example", 443), "key-1") is a
    assert pacer_for(("https", "api.example", 443), "key-2") is not a
    assert pacer_for(("http", "127.0.0.1", 2020), "key-1") is not a
