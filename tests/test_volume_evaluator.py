"""The whole-volume evaluator: failures recorded per case, postprocessing inline or in a worker thread."""

import threading
import time

import pytest
import torch
from ignite.engine import Events
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


def evaluate(post: Recorder, background: bool, count: int = 5, **kwargs) -> VolumeEvaluator:
    torch.manual_seed(0)
    network = nn.Conv2d(1, 2, 1).eval()
    loader = DataLoader(cases(count), batch_size=1)
    evaluator = VolumeEvaluator(
        "cpu", loader, network, postprocessing=post, background_postprocessing=background, max_pending=2, **kwargs
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


class AtCompletion:
    """A handler that notes, when the run completes, which cases are postprocessed and which failures are known (as
    the evaluation report does, reading the written files); ``stop_at``: terminate the run after that iteration."""

    def __init__(self, post: Recorder, stop_at: int | None = None) -> None:
        self.post, self.stop_at = post, stop_at
        self.seen: tuple[list[str], list[str]] | None = None

    def attach(self, engine: VolumeEvaluator) -> None:
        engine.add_event_handler(Events.COMPLETED, self.completed)
        if self.stop_at is not None:
            engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.stop_at), lambda e: e.terminate())

    def completed(self, engine: VolumeEvaluator) -> None:
        self.seen = (sorted(self.post.sums), list(engine.state.failures))


@pytest.mark.parametrize("stop_at", [None, 3])
def test_the_handlers_at_completion_see_every_case_done_and_every_failure(stop_at):
    post = Recorder(broken="case_1.nii.gz", delay=0.05)
    handler = AtCompletion(post, stop_at)
    evaluate(post, True, val_handlers=[handler])
    done = ["case_0.nii.gz", "case_2.nii.gz", "case_3.nii.gz", "case_4.nii.gz"][: 2 if stop_at else 4]
    assert handler.seen == (done, ["case_1.nii.gz: disk full"])


def test_the_engine_keeps_the_network_outputs():
    def replace(data: dict) -> dict:
        return {**data, "pred": torch.zeros(1)}

    outputs = []
    network, loader = nn.Conv2d(1, 2, 1).eval(), DataLoader(cases(2), batch_size=1)
    evaluator = VolumeEvaluator("cpu", loader, network, postprocessing=replace, background_postprocessing=True)
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(e.state.output[0]["pred"].shape))
    evaluator.run()
    assert outputs == [torch.Size([2, 4, 4])] * 2


def test_background_postprocessing_must_be_a_bool():
    with pytest.raises(TypeError, match="background_postprocessing must be True or False, got 'false'"):
        VolumeEvaluator("cpu", DataLoader(cases(1)), nn.Identity(), background_postprocessing="false")


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
