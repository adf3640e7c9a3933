"""Unit tests of maskgit_lib.training with a toy model (fast: no VQGAN, no transformer)."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import pytest
import torch
from torch import nn

from maskgit_lib.checkpoint import load_training_state, read_weights, save_training_state, save_weights
from maskgit_lib.config import TrainConfig
from maskgit_lib.errors import ConfigError
from maskgit_lib.runtime import DistContext
from maskgit_lib.training.logs import CsvLogger, plot_curves, read_csv
from maskgit_lib.training.loop import NonFiniteLossError, Trainer, TrainSession, TrainTask
from maskgit_lib.training.optim import EpochSampler, check_train_config, lr_at, param_groups
from maskgit_lib.training.state import rng_state, set_rng_state


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lr_schedule_warmup_then_cosine_to_min():
    cfg = TrainConfig(lr=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    lrs = [lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warmup
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine: non-increasing
    assert lrs[60] == pytest.approx(1e-4 + 0.9e-3 * 0.5, rel=1e-6)  # halfway: midpoint
    assert lr_at(110, cfg) == pytest.approx(1e-4)  # ends at min_lr_ratio * lr
    # the time budget can only make the decay go faster
    assert lr_at(20, cfg, time_fraction=1.0) == pytest.approx(1e-4)
    time_only = dataclasses.replace(cfg, max_steps=0)
    assert lr_at(500, time_only, 0.0) == pytest.approx(1e-3)
    assert lr_at(500, time_only, 0.5) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(500, time_only, 1.0) == pytest.approx(1e-4)


def test_check_train_config_messages():
    with pytest.raises(ConfigError, match="max-minutes"):
        check_train_config(TrainConfig(max_steps=0))
    with pytest.raises(ConfigError, match="multiple"):
        check_train_config(TrainConfig(batch_size=10, grad_accum=4))
    with pytest.raises(ConfigError, match="multiple"):
        check_train_config(TrainConfig(batch_size=6), world_size=4)
    check_train_config(TrainConfig(max_steps=0, max_minutes=1.0))


def test_epoch_sampler_covers_each_epoch_and_splits_like_distributed_sampler():
    sampler = EpochSampler(10, 4, seed=3, device=torch.device("cpu"))
    stream = torch.cat([sampler.indices(s) for s in range(5)])  # 20 items = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10)) and sorted(stream[10:].tolist()) == list(range(10))
    assert not torch.equal(stream[:10], stream[10:])  # a new permutation per epoch
    for step in range(5):
        whole = sampler.indices(step)
        parts = [sampler.indices(step, rank, 2) for rank in range(2)]
        assert torch.equal(torch.stack(parts, 1).flatten(), whole)  # rank r takes positions r, r+2, ...
    again = EpochSampler(10, 4, seed=3, device=torch.device("cpu"))
    assert torch.equal(again.indices(3), sampler.indices(3))  # stateless: a pure function of the step
    assert sampler.epoch_of(2) == 0 and sampler.epoch_of(3) == 1


def test_param_groups_skip_norms_biases_embeddings():
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    model.pos_emb = nn.Parameter(torch.zeros(3, 4))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p is model[1].weight for p in decay["params"]] == [True]
    assert len(no_decay["params"]) == 5  # embedding, linear bias, LN weight+bias, pos_emb


def test_csv_logger_append_on_resume_drops_rows_after_checkpoint(tmp_path):
    path = tmp_path / "log.csv"
    fields = ["step", "lr", "loss"]
    logger = CsvLogger(path, fields, resume_step=None)
    for step in range(1, 8):
        logger.log({"step": step, "lr": 0.1, "loss": 1.0 / step})
    with open(path, "a") as fh:
        fh.write("8,0.1")  # a half-written line (killed mid-write)
    CsvLogger(path, fields, resume_step=5).log({"step": 6, "lr": 0.2, "loss": 9.0})
    header, rows = read_csv(path)
    assert header == fields
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["loss"] == "9"
    # a log with another header is moved aside, not mixed
    CsvLogger(path, ["step", "other"], resume_step=3)
    assert (tmp_path / "log.1.csv").exists() and read_csv(path)[0] == ["step", "other"]
    assert plot_curves(tmp_path / "log.1.csv", tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    state = rng_state()
    expected = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    save_training_state(tmp_path / "s.pt", {"rng": state})
    set_rng_state(load_training_state(tmp_path / "s.pt")["rng"])
    again = (torch.rand(3), __import__("numpy").random.rand(), __import__("random").random())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]


# --------------------------------------------------------------------- toy trainer
X = torch.linspace(-1, 1, 24 * 4).reshape(24, 4)
Y = X.sum(1, keepdim=True).sin()


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


def toy_trainer(run_dir, cfg, *, nan_at=None, stop_at_step=None, resume=True):
    torch.manual_seed(0)
    model = Toy()
    calls = {"n": 0}

    def step(m, idx, gen, step):
        x = X[idx] + 0.01 * torch.randn(X[idx].shape, generator=gen)
        loss = (m(x) - Y[idx]).pow(2).mean()
        calls["n"] += 1
        if nan_at is not None and calls["n"] >= nan_at:
            loss = loss * float("nan")
        return {"loss": loss}

    def validate():
        return {"mse": float((model(X) - Y).pow(2).mean())}

    def save_final(path, metrics):
        save_weights(path, model.state_dict(), model_type="toy", config={}, metrics=metrics)

    task = TrainTask(kind="toy", model=model, model_config={"width": 16}, train_step=step, validate=validate,
                     save_final=save_final, num_train=len(X), loss_names=["loss"], val_names=["mse"])
    session = TrainSession(run_dir=run_dir, stop_at_step=stop_at_step, resume=resume, show_progress=False)
    return Trainer(task, cfg, DistContext(torch.device("cpu")), session)


CFG = TrainConfig(batch_size=4, lr=1e-2, warmup_steps=2, max_steps=12, val_every=4, ckpt_every=3, log_every=2)


def test_toy_run_writes_everything_and_resume_is_bitwise(tmp_path):
    summary = toy_trainer(tmp_path / "a", CFG).run()
    assert summary["steps"] == 12 and summary["stop_reason"] == "max_steps"
    for name in ("state.pt", "final.safetensors", "log.csv", "curves.png", "summary.json"):
        assert (tmp_path / "a" / name).exists(), name
    weights, meta = read_weights(tmp_path / "a" / "final.safetensors")
    assert meta["metrics"]["steps"] == 12 and "val_mse" in meta["metrics"]
    _, rows = read_csv(tmp_path / "a" / "log.csv")
    assert [int(r["step"]) for r in rows if r["loss"]] == [2, 3, 4, 6, 8, 9, 10, 12]

    first = toy_trainer(tmp_path / "b", CFG, stop_at_step=7).run()  # interrupted session; state at 6? no: 7
    assert first["steps"] == 7 and first["stop_reason"] == "stop_at_step"
    second = toy_trainer(tmp_path / "b", CFG).run()
    assert second["resumed_from_step"] == 7 and second["steps"] == 12
    resumed, _ = read_weights(tmp_path / "b" / "final.safetensors")
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)  # bitwise, dropout included
    _, rows_b = read_csv(tmp_path / "b" / "log.csv")
    assert [int(r["step"]) for r in rows_b if r["loss"]] == [2, 3, 4, 6, 7, 8, 9, 10, 12]


def test_nan_guard_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = toy_trainer(tmp_path, CFG, nan_at=8)  # the 8th call is optimizer step 8
    with pytest.raises(NonFiniteLossError, match=r"non-finite at step 8\b"):
        trainer.run()
    state = load_training_state(tmp_path / "state.pt")
    assert state["step"] == 6  # the checkpoint of step 6, written before the NaN
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "final.safetensors").exists()
    digest = hashlib.sha256((tmp_path / "state.pt").read_bytes()).hexdigest()
    with pytest.raises(NonFiniteLossError, match="kept untouched"):
        toy_trainer(tmp_path, CFG, nan_at=1).run()  # resumes from step 6, fails at once
    assert hashlib.sha256((tmp_path / "state.pt").read_bytes()).hexdigest() == digest


def test_resume_with_other_settings_is_refused(tmp_path):
    toy_trainer(tmp_path, CFG, stop_at_step=3).run()
    with pytest.raises(ConfigError, match=r"refusing to resume.*lr: checkpoint 0.01 vs requested 0.02.*--no-resume"):
        toy_trainer(tmp_path, dataclasses.replace(CFG, lr=2e-2)).run()
    # budget/interval fields may change; --no-resume starts over
    assert toy_trainer(tmp_path, dataclasses.replace(CFG, max_steps=5)).run()["resumed_from_step"] == 3
    fresh = toy_trainer(tmp_path, dataclasses.replace(CFG, lr=2e-2, max_steps=4), resume=False).run()
    assert fresh["resumed_from_step"] is None and fresh["steps"] == 4


def test_time_budget_stops_cleanly_with_the_lr_decayed(tmp_path):
    cfg = dataclasses.replace(CFG, max_steps=0, max_minutes=0.02, val_every=10**6, ckpt_every=10**6)
    summary = toy_trainer(tmp_path, cfg).run()
    assert summary["stop_reason"] == "max_minutes" and summary["steps"] > 2
    assert summary["final_lr"] <= cfg.lr * (cfg.min_lr_ratio + 0.05)
    assert summary["wall_time_s"] < 0.02 * 60 + 5
    assert load_training_state(tmp_path / "state.pt")["step"] == summary["steps"]
    assert math.isfinite(read_weights(tmp_path / "final.safetensors")[1]["metrics"]["val_mse"])


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog, native):
    import argparse
    import logging

    from maskgit_lib.cli import train as cli_train
    from maskgit_lib.cli.train import train_config_from_flags

    monkeypatch.setattr(cli_train, "native_bf16", lambda device: native)
    with caplog.at_level(logging.WARNING, logger="maskgit_lib.cli.train"):
        cfg = train_config_from_flags(argparse.Namespace(bf16=True, device="cpu"), TrainConfig())
    assert cfg.bf16
    assert ("without native bf16" in caplog.text) is (not native)


def test_an_old_state_with_num_workers_still_resumes(tmp_path):
    assert "num_workers" not in {f.name for f in dataclasses.fields(TrainConfig)}
    toy_trainer(tmp_path, CFG, stop_at_step=3).run()
    state = load_training_state(tmp_path / "state.pt")
    state["train_config"]["num_workers"] = 0  # written before TrainConfig.num_workers was removed
    save_training_state(tmp_path / "state.pt", state)
    assert toy_trainer(tmp_path, CFG).run()["resumed_from_step"] == 3
