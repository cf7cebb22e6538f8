"""seglab's training hooks under the conditions of a multi-GPU CUDA node, faked on the CPU:
checkpoints mapped to another device, several ranks (gloo processes), a patched
``torch.cuda``, and AMP's loss scaler backing off."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seglab.engine.checkpoint import load_checkpoint_file
from seglab.engine.hooks.nonfinite_loss_hook import NonFiniteLossHook, TrainingDiverged
from seglab.engine.hooks.rng_state_hook import RNGStateHook
from seglab.engine.rng import RNG_KEY, capture_rng_state, restore_rng_state


def draws() -> tuple:
    return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random()


def save_and_load(checkpoint: dict, path: Path, map_location: str | None = None) -> dict:
    torch.save(checkpoint, path)
    return load_checkpoint_file(str(path), map_location=map_location)


def test_rng_streams_restore_from_a_checkpoint_mapped_to_another_device(tmp_path) -> None:
    """mmengine's resume maps every tensor of the checkpoint onto the current GPU; 'meta'
    plays that device here. RNG states stored as tensors would arrive there and
    ``torch.set_rng_state`` would refuse them."""
    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True, seed=0, train_dataloader=SimpleNamespace())
    checkpoint: dict = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draws()
    loaded = save_and_load(checkpoint, tmp_path / "ckpt.pth", map_location="meta")
    draws()  # move the streams on, as a fresh process would start elsewhere
    hook.after_load_checkpoint(runner, loaded)
    hook.before_train(runner)
    assert draws() == expected


def test_resumed_streams_survive_mmengines_reseed_after_loading(tmp_path) -> None:
    """Without randomness.seed in the config (none of configs/ has one), mmengine's resume
    reseeds every generator after the checkpoint is loaded; the streams are put back in
    before_train, which runs after that."""
    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True, seed=0, train_dataloader=SimpleNamespace())
    hook.after_train_epoch(runner)
    checkpoint: dict = {}
    hook.before_save_checkpoint(runner, checkpoint)
    expected = draws()
    hook.after_load_checkpoint(runner, save_and_load(checkpoint, tmp_path / "c.pth"))
    torch.manual_seed(1234)  # Runner.resume -> set_randomness(seed=resumed_seed)
    np.random.seed(1234)
    random.seed(1234)
    hook.before_train(runner)
    assert draws() == expected


def test_format_1_checkpoints_with_tensor_states_on_another_device_still_restore() -> None:
    state = capture_rng_state()
    expected = draws()
    legacy = {"torch": torch.from_numpy(state["torch"]).to(torch.float64),  # not a ByteTensor
              "numpy": {**state["numpy"], "key": torch.from_numpy(state["numpy"]["key"])},
              "python": state["python"]}
    restore_rng_state(legacy)
    assert draws() == expected


class FakeCuda:
    """A ``torch.cuda`` with one generator per device: what a rank's process sees."""

    def __init__(self, device: int = 0, devices: int = 8) -> None:
        self.device = device
        self.states = {d: torch.full((16,), d, dtype=torch.uint8) for d in range(devices)}
        self.set_calls: list[torch.Tensor] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.device)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[
            self.device].clone())
        monkeypatch.setattr(torch.cuda, "set_rng_state", self._set)

        def refuse(*args, **kwargs):
            raise AssertionError("the states of all GPUs are not this rank's to set")

        monkeypatch.setattr(torch.cuda, "get_rng_state_all", refuse)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", refuse)

    def _set(self, state: torch.Tensor, device: str = "cuda") -> None:
        assert state.device.type == "cpu" and state.dtype == torch.uint8, state
        self.set_calls.append(state)


def test_each_rank_saves_and_restores_only_its_own_gpu_stream(monkeypatch, tmp_path) -> None:
    cuda = FakeCuda(device=3)
    cuda.install(monkeypatch)
    state = capture_rng_state()
    assert np.array_equal(state["cuda"], np.full(16, 3, dtype=np.uint8))
    loaded = save_and_load({RNG_KEY: state}, tmp_path / "c.pth", map_location="meta")
    restore_rng_state(loaded[RNG_KEY])
    assert [t.tolist() for t in cuda.set_calls] == [[3] * 16]


def test_a_format_1_state_saved_with_fewer_gpus_is_skipped_not_an_index_error(
        monkeypatch) -> None:
    cuda = FakeCuda(device=5)
    cuda.install(monkeypatch)
    legacy = capture_rng_state()
    legacy["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2  # rank 0 of a 2-GPU run
    restore_rng_state(legacy)
    assert cuda.set_calls == []


def _rank_worker(rank: int, world: int, store: str, out: str) -> None:
    """One rank: seed its own streams, save (rank 0 writes), scramble, resume, draw."""
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)
    np.random.seed(200 + rank)
    random.seed(300 + rank)
    hook = RNGStateHook()
    runner = SimpleNamespace(_resume=True, seed=0, train_dataloader=SimpleNamespace())
    hook.after_train_epoch(runner)  # every rank, before CheckpointHook
    if rank == 0:  # mmengine's Runner.save_checkpoint is @master_only
        checkpoint: dict = {}
        hook.before_save_checkpoint(runner, checkpoint)
        torch.save(checkpoint, Path(out) / "ckpt.pth")
    expected = draws()
    dist.barrier()
    torch.manual_seed(999)  # a resumed process starts from other streams
    hook.after_load_checkpoint(runner, load_checkpoint_file(str(Path(out) / "ckpt.pth")))
    hook.before_train(runner)
    (Path(out) / f"rank{rank}.json").write_text(json.dumps({"expected": expected,
                                                            "resumed": draws()}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_every_rank_resumes_its_own_streams(tmp_path) -> None:
    mp.spawn(_rank_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["resumed"] == r["expected"] for r in results)
    assert results[0]["expected"] != results[1]["expected"]
    saved = load_checkpoint_file(str(tmp_path / "ckpt.pth"))[RNG_KEY]
    assert len(saved["ranks"]) == 2


def test_a_resume_on_another_world_size_restores_what_it_can_and_says_so(
        monkeypatch) -> None:
    import mmengine.dist

    from seglab.engine.rng import rng_state_for_this_rank

    states = [capture_rng_state(), capture_rng_state()]
    monkeypatch.setattr(mmengine.dist, "get_world_size", lambda group=None: 4)
    monkeypatch.setattr(mmengine.dist, "get_rank", lambda group=None: 3)
    state, note = rng_state_for_this_rank({"format": 2, "ranks": states})
    assert state is None and "2 rank(s), this run has 4" in note
    monkeypatch.setattr(mmengine.dist, "get_rank", lambda group=None: 1)
    assert rng_state_for_this_rank({"format": 2, "ranks": states})[0] is states[1]


# --- what the runner was built with ---------------------------------------------------


def _direct_runner(tmp_path: Path, **kwargs):
    """A runner built with ``Runner(...)``, not ``Runner.from_cfg``: its ``cfg`` is empty."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, inputs=None, data_samples=None, mode="tensor"):
            return self.linear(inputs)

    return Runner(model=Toy(), work_dir=str(tmp_path / "work"), **kwargs)


def test_pretrained_coverage_reads_load_from_and_resume_of_a_runner_built_without_a_cfg(
        tmp_path) -> None:
    """``runner.cfg`` holds ``load_from``/``resume`` only for ``Runner.from_cfg``: a hook
    that read them there would skip this fine-tune's check."""
    from seglab.engine.hooks.pretrained_coverage_hook import PretrainedCoverageHook
    from seglab.engine.runner_fields import runner_arg

    ckpt = tmp_path / "toy.pth"
    runner = _direct_runner(tmp_path)
    torch.save({"state_dict": runner.model.state_dict()}, ckpt)
    runner = _direct_runner(tmp_path, load_from=str(ckpt))
    assert runner.cfg.get("load_from") is None and runner_arg(runner, "load_from") == str(ckpt)
    runner.load_or_resume()  # what Runner.train does before before_train
    hook = PretrainedCoverageHook()
    hook.before_train(runner)
    assert hook.coverage is not None and hook.coverage.fraction == 1.0

    resumed = _direct_runner(tmp_path, load_from=str(ckpt), resume=True)
    assert not resumed.cfg.get("resume") and runner_arg(resumed, "resume") is True
    hook = PretrainedCoverageHook()
    hook.before_train(resumed)
    assert hook.coverage is None  # a resumed run's weights come from the run itself


# --- per-class records ----------------------------------------------------------------


def _metrics_runner(tmp_path: Path, hooks: list) -> SimpleNamespace:
    record = {"classes": ["a", "b"], "per_class": {"IoU": [50.0, None]}, "support": [3, 0]}
    scalars: list = []
    return SimpleNamespace(
        hooks=hooks, work_dir=str(tmp_path), epoch=2, iter=40,
        val_evaluator=SimpleNamespace(metrics=[SimpleNamespace(last_record=record)]),
        visualizer=SimpleNamespace(add_scalars=lambda s, step: scalars.append((s, step))),
        scalars=scalars)


def test_class_metrics_finds_a_logger_hook_subclass(tmp_path) -> None:
    """A config's own LoggerHook subclass that logs metrics by iteration: the record and
    the scalars are named by iteration, as that hook logs them."""
    from mmengine.hooks import LoggerHook

    from seglab.engine.hooks.class_metrics_hook import ClassMetricsHook

    class MyLoggerHook(LoggerHook):
        pass

    runner = _metrics_runner(tmp_path, [MyLoggerHook(log_metric_by_epoch=False)])
    hook = ClassMetricsHook()
    hook.before_train(runner)
    hook.after_val_epoch(runner)
    assert (tmp_path / "class_metrics" / "val_iter_40.json").is_file()
    assert runner.scalars == [({"val/IoU/a": 50.0}, 40)]


def test_class_metrics_names_a_validation_outside_training_final(tmp_path) -> None:
    """Only validations between before_train and after_train belong to an epoch."""
    from mmengine.hooks import LoggerHook

    from seglab.engine.hooks.class_metrics_hook import ClassMetricsHook

    runner = _metrics_runner(tmp_path, [LoggerHook()])
    hook = ClassMetricsHook()
    names = []
    for step in (None, hook.before_train, hook.after_train):
        if step is not None:
            step(runner)
        runner.val_evaluator.metrics[0].last_record = {
            "classes": ["a"], "per_class": {"IoU": [1.0]}, "support": [1]}
        hook.after_val_epoch(runner)
        names.append(sorted(p.name for p in (tmp_path / "class_metrics").glob("*.json")))
    assert names == [["val.json"], ["val.json", "val_epoch_2.json"],
                     ["val.json", "val_epoch_2.json"]]


# --- NaN guard -----------------------------------------------------------------------


def _runner(tmp_path: Path, wrapper, grad_norm: float) -> SimpleNamespace:
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance(f"nan_guard_{random.random()}")
    hub.update_scalar("train/grad_norm", grad_norm)
    return SimpleNamespace(optim_wrapper=wrapper, message_hub=hub, iter=0, epoch=0,
                           work_dir=str(tmp_path))


def _amp_wrapper(monkeypatch) -> tuple:
    """A real ``AmpOptimWrapper`` with a real (CPU) dynamic loss scaler."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp

    monkeypatch.setattr(amp, "is_cuda_available", lambda: True)
    param = torch.nn.Parameter(torch.ones(3))
    wrapper = amp.AmpOptimWrapper(optimizer=torch.optim.SGD([param], lr=0.1))
    wrapper.loss_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    return wrapper, param


def test_amp_scaler_backoffs_in_a_row_are_not_divergence(monkeypatch, tmp_path) -> None:
    """An fp16 run with clip_grad starts by overflowing: each time the scaler skips the
    step and halves the scale. Eight back-offs in a row are healthy."""
    wrapper, param = _amp_wrapper(monkeypatch)
    hook = NonFiniteLossHook()
    for step in range(8):
        wrapper.backward(param.sum())  # scaled by the loss scaler
        param.grad.fill_(float("inf"))  # fp16 overflow in the backward pass
        wrapper.step()  # the scaler finds inf, skips the step and halves its scale
        wrapper.zero_grad()
        runner = _runner(tmp_path, wrapper, grad_norm=float("inf"))
        runner.iter = step
        hook.after_train_iter(runner, step, outputs={"loss": torch.tensor(1.0)})
    assert wrapper.loss_scaler.get_scale() == 2.0**8
    assert torch.equal(param.data, torch.ones(3))  # every step was skipped
    assert not list(tmp_path.glob("nonfinite_*.json"))


@pytest.mark.parametrize(("scale", "dtype"), [(0.5, None), (2.0**16, torch.bfloat16)],
                         ids=["fp16-below-the-minimum-scale", "bf16-has-fp32s-range"])
def test_amp_gradient_overflow_that_is_divergence(monkeypatch, tmp_path, scale, dtype) -> None:
    """Below scale 1 the gradients overflow unscaled; bf16 never overflows where fp32
    would not: in both an infinite gradient norm is divergence, not a back-off."""
    wrapper, _ = _amp_wrapper(monkeypatch)
    wrapper.loss_scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    wrapper.cast_dtype = dtype
    hook = NonFiniteLossHook(patience=2)
    hook.after_train_iter(_runner(tmp_path, wrapper, float("inf")), 0,
                          outputs={"loss": torch.tensor(1.0)})
    with pytest.raises(TrainingDiverged, match="grad_norm=inf"):
        hook.after_train_iter(_runner(tmp_path, wrapper, float("inf")), 1,
                              outputs={"loss": torch.tensor(1.0)})


def _nan_worker(rank: int, world: int, store: str, out: str) -> None:
    """Rank 1's loss is NaN, rank 0's is fine: both must stop, rank 0 writes one record."""
    from mmengine.logging import MessageHub
    from mmengine.optim import OptimWrapper
    from mmengine.structures import BaseDataElement

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    wrapper = OptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))],
                                                     lr=0.1))
    runner = SimpleNamespace(optim_wrapper=wrapper, iter=4, epoch=0, work_dir=out, hooks=[],
                             message_hub=MessageHub.get_instance(f"rank{rank}"))
    batch = {"data_samples": [BaseDataElement(metainfo={"img_path": f"img_r{rank}_{i}.jpg"})
                              for i in range(2)]}
    loss = torch.tensor(float("nan") if rank == 1 else 1.0)
    try:
        NonFiniteLossHook().after_train_iter(runner, 4, batch, outputs={"loss": loss})
        outcome = "continued"
    except TrainingDiverged as err:
        outcome = str(err)
    (Path(out) / f"outcome{rank}.txt").write_text(outcome)
    # a distributed run judges every step even with a check interval: mmengine saves on
    # rank 0 only, where no check could agree over the ranks
    held = NonFiniteLossHook(check_interval=100)
    held.before_train(runner)
    try:
        for step in range(3):
            runner.iter = step
            bad = rank == 1 and step == 1
            held.after_train_iter(runner, step, batch,
                                  outputs={"loss": torch.tensor(float("nan") if bad else 1.0)})
        outcome = "continued"
    except TrainingDiverged as err:
        outcome = str(err)
    (Path(out) / f"held{rank}.txt").write_text(outcome)
    dist.destroy_process_group()


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_with_one_record(tmp_path) -> None:
    mp.spawn(_nan_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    outcomes = [(tmp_path / f"outcome{r}.txt").read_text() for r in range(2)]
    assert all("training diverged at iter 5" in o for o in outcomes), outcomes
    assert "loss (another rank)" in outcomes[0] and "loss=nan" in outcomes[1]
    held = [(tmp_path / f"held{r}.txt").read_text() for r in range(2)]
    assert all("training diverged at iter 2 " in o and "found at" not in o for o in held)
    record = json.loads((tmp_path / "nonfinite_iter_5.json").read_text())
    assert record["terms"] == ["loss"]
    assert record["img_paths"] == [f"img_r{r}_{i}.jpg" for r in range(2) for i in range(2)]



def test_a_run_logs_where_its_start_up_went(voc_two_epochs) -> None:
    """StartupTimeHook: one line at the first step, its phases in train()'s order, adding up to
    the total; the same phases in the message hub."""
    runner, work_dir = voc_two_epochs
    log = next(Path(work_dir).glob("*/*.log")).read_text()
    lines = re.findall(r"seglab: start-up ([\d.]+) s to the first step: (.*)", log)
    assert len(lines) == 1, lines
    total, parts = float(lines[0][0]), re.findall(r"([a-z ]+?) ([\d.]+) s", lines[0][1])
    assert [name.strip() for name, _ in parts] == [
        "imports", "config", "doctor", "data check", "runner", "first step"]
    assert sum(float(s) for _, s in parts) == pytest.approx(total, abs=0.35)  # 0.1 s rounding
    phases = json.loads(runner.message_hub.get_info("startup_seconds"))
    assert list(phases) == [name.strip() for name, _ in parts] and phases["imports"] > 0


def test_the_start_up_timeline_counts_from_the_process_start() -> None:
    from seglab.engine.startup import StartupTimeline, process_age

    first = process_age()
    assert 0 < first < 24 * 3600  # this process's age, not the machine's uptime
    timeline = StartupTimeline()
    timeline.marks = [("imports", 2.0), ("config", 2.5), ("first step", 4.25)]
    assert timeline.phases() == {"imports": 2.0, "config": 0.5, "first step": 1.75}
    assert timeline.line() == ("start-up 4.2 s to the first step: imports 2.0 s, config 0.5 s, "
                               "first step 1.8 s")
    timeline.mark("later")
    assert timeline.marks[-1][1] >= round(first, 3)
