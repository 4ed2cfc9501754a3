"""The whole-volume evaluator: failures recorded per case, postprocessing inline or in a worker thread."""

import threading
import time

import pytest
import torch
from monai.data import DataLoader, MetaTensor
from torch import nn

from mgrad.engines import CaseFailures, VolumeEvaluator, raise_for_failures
from mgrad.engines.background import BackgroundPostprocessing
from mgrad.errors import root_cause


class Recorder:
    """A postprocessing that keeps each case's prediction sum and the thread it ran in; fails on ``broken``."""

    def __init__(self, broken: str | None = None, delay: float = 0.0) -> None:
        self.broken, self.delay = broken, delay
        self.sums: dict[str, float] = {}
        self.threads: set[str] = set()

    def __call__(self, data: dict) -> dict:
        time.sleep(self.delay)
        name = data["image"].meta["filename_or_obj"]
        if name == self.broken:
            raise OSError(f"{name}: disk full")
        self.threads.add(threading.current_thread().name)
        self.sums[name] = float(data["pred"].sum())
        return data


def cases(count: int = 5) -> list[dict]:
    return [
        {"image": MetaTensor(torch.full((1, 4, 4), float(i)), meta={"filename_or_obj": f"case_{i}.nii.gz"})}
        for i in range(count)
    ]


def evaluate(post: Recorder, background: bool, count: int = 5) -> VolumeEvaluator:
    network = nn.Conv2d(1, 2, 1).eval()
    loader = DataLoader(cases(count), batch_size=1)
    evaluator = VolumeEvaluator(
        "cpu", loader, network, postprocessing=post, background_postprocessing=background, max_pending=2
    )
    evaluator.run()
    return evaluator


@pytest.mark.parametrize("background", [False, True])
def test_every_case_is_postprocessed_before_run_returns(background):
    post = Recorder(delay=0.02)
    evaluate(post, background)
    assert sorted(post.sums) == [f"case_{i}.nii.gz" for i in range(5)]
    worker = {"postprocessing_0"} if background else {threading.current_thread().name}
    assert post.threads == worker


def test_background_postprocessing_gives_what_inline_gives():
    inline, background = Recorder(), Recorder()
    evaluate(inline, False)
    evaluate(background, True)
    assert background.sums == inline.sums and len(inline.sums) == 5


@pytest.mark.parametrize("background", [False, True])
def test_a_failing_postprocessing_is_recorded_with_its_case_and_the_rest_go_on(background):
    post = Recorder(broken="case_2.nii.gz")
    evaluator = evaluate(post, background)
    assert evaluator.state.failures == ["case_2.nii.gz: disk full"]
    assert sorted(post.sums) == ["case_0.nii.gz", "case_1.nii.gz", "case_3.nii.gz", "case_4.nii.gz"]
    with pytest.raises(CaseFailures, match="1 of 5 cases failed:\n  case_2.nii.gz: disk full"):
        raise_for_failures(evaluator)


class FakeEngine:
    """An engine's state after decollation: one batch item and one output per submit."""

    def __init__(self) -> None:
        self.state = type("State", (), {})()

    def hand_over(self, background: BackgroundPostprocessing, value: int) -> None:
        self.state.batch, self.state.output = [{"index": value}], [{"pred": value}]
        background.submit(self)


def test_no_more_than_max_pending_wait_and_order_is_kept():
    gate, done, running = threading.Event(), [], []

    def slow(data: dict) -> dict:
        running.append(data["index"])
        gate.wait(timeout=10)
        done.append(data["index"])
        return data

    background = BackgroundPostprocessing(slow, on_failure=lambda item, error: None, max_pending=2)
    engine = FakeEngine()
    engine.hand_over(background, 0)
    engine.hand_over(background, 1)  # two handed over: neither waits
    assert done == []
    releaser = threading.Timer(0.2, gate.set)
    releaser.start()
    started = time.perf_counter()
    engine.hand_over(background, 2)  # the third waits for the first to finish
    assert time.perf_counter() - started >= 0.15 and done[:1] == [0]
    background.close()
    assert done == running == [0, 1, 2]
    releaser.join()


def test_failures_are_reported_in_the_engine_thread_with_their_item():
    reported = []

    def report(item: tuple, error: BaseException) -> None:
        reported.append((item[0]["index"], str(root_cause(error)), threading.current_thread().name))

    def fail_odd(data: dict) -> dict:
        if data["index"] % 2:
            raise ValueError(f"odd {data['index']}")
        return data

    background = BackgroundPostprocessing(fail_odd, on_failure=report)
    engine = FakeEngine()
    for value in range(4):
        engine.hand_over(background, value)
    background.wait()
    here = threading.current_thread().name
    assert reported == [(1, "odd 1", here), (3, "odd 3", here)]
    background.close()


def test_max_pending_below_one_is_refused():
    with pytest.raises(ValueError, match="max_pending must be at least 1, got 0"):
        BackgroundPostprocessing(lambda d: d, on_failure=print, max_pending=0)
