"""Tests for maskgit_lib.speed (the `maskgit bench` machinery): FLOP counts and report keys, no timings."""

import dataclasses
import json

import pytest
import torch

from maskgit_lib.cli import evaluate
from maskgit_lib.evaluation import bench, speed, threads
from maskgit_lib.cli import build_parser
from maskgit_lib.config import TransformerConfig
from maskgit_lib.errors import ConfigError
from maskgit_lib.transformer import MaskGITTransformer, flops_per_image, set_attention_impl

TINY = TransformerConfig.preset("tiny")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("impl", ["sdpa", "scratch"])
def test_forward_flops_match_flops_per_image(impl):
    torch.manual_seed(0)
    model = set_attention_impl(MaskGITTransformer(TINY).eval(), impl)
    tokens = torch.randint(0, TINY.codebook_size + 1, (3, TINY.num_tokens))
    with torch.no_grad():
        counted = speed.count_flops(lambda: model(tokens))
    # the CPU flash-attention kernel (sdpa) is counted too, so both paths agree with the formula
    assert counted == pytest.approx(3 * flops_per_image(TINY), rel=0.02)


def test_cpu_preset_forward_flops_match():
    cfg = TransformerConfig.preset("cpu")
    model = MaskGITTransformer(cfg).eval()
    with torch.no_grad():
        counted = speed.count_flops(lambda: model(torch.full((1, cfg.num_tokens), cfg.mask_token_id)))
    assert counted == pytest.approx(flops_per_image(cfg), rel=0.02)
    assert flops_per_image(cfg) == pytest.approx(3.93e9, rel=0.01)


def test_training_flops_are_three_forwards():
    torch.manual_seed(0)
    model = MaskGITTransformer(TINY).train()
    tokens = torch.randint(0, TINY.codebook_size + 1, (2, TINY.num_tokens))
    counted = speed.count_flops(lambda: model(tokens).sum().backward())
    assert counted == pytest.approx(2 * flops_per_image(TINY, training=True), rel=0.03)


def test_machine_info_keys():
    info = speed.machine_info(torch.device("cpu"))
    for key in ("cpu_model", "physical_cores", "avx2", "avx512", "amx", "native_bf16", "torch_threads",
                "torch_version", "load_average"):
        assert key in info
    assert info["physical_cores"] >= 1
    assert isinstance(info["avx512"], list) and isinstance(info["amx"], list)


def test_peak_table_and_sampler_shapes():
    table = speed.peak_table(torch.float32, torch.device("cpu"), sizes=(128,), budget_s=0.5, repeats=1)
    assert table["gflops"] > 0 and table["best"] in table["samples"]
    sampler = speed.PeakSampler(torch.float32, torch.device("cpu"), table, target_s=0.01, repeats=1)
    result = speed.interleaved(lambda: torch.zeros(10).sum(), images=2, flops_per_image=1e6, peak=sampler,
                               rounds=2, device=torch.device("cpu"))
    assert len(result["peak_samples"]) == 3 and len(result["seconds"]) == 2
    for key in ("images_per_s", "mfu", "mfu_vs_mean_peak", "mfu_vs_max_peak", "cpu_mfu", "achieved_gflops"):
        assert result[key] is not None and result[key] >= 0


def tiny_options(tmp_path, sections):
    return speed.BenchOptions.quick_defaults(
        preset="tiny", threads=1, sections=sections, peak_sizes=(128,), peak_budget_s=0.5, peak_sample_s=0.01, train_batch=2, vqgan_batch=2,
        decode_batch=2, bf16_batch=1, latency_runs=1, attention_batch=2, forward_batch=2, steps=2,
        out=tmp_path / "bench.md")


@pytest.mark.slow
def test_quick_bench_on_tiny_models_writes_expected_keys(tmp_path):
    opts = tiny_options(tmp_path, ("train", "vqgan", "decode", "attention", "threads"))
    threads = torch.get_num_threads()
    results = bench.run_bench(opts, command="maskgit bench --quick --preset tiny")
    assert torch.get_num_threads() == threads  # restored
    assert results["errors"] == {}
    assert results["machine"]["torch_threads"] == 1
    assert results["threads"]["matmul_1024_s_1_threads"] > 0
    train = results["train"]
    assert train["flop_check_train"] == pytest.approx(1.0, rel=0.03)
    assert train["flop_check_forward"] == pytest.approx(1.0, rel=0.03)
    for precision in ("fp32", "bf16"):
        assert {"images_per_s", "mfu", "cpu_mfu", "peak_gflops_mean", "peak_gflops_max", "batch"} <= set(train[precision])
    assert results["vqgan"]["flops_per_image_train"] > 0 and "fp32" in results["vqgan"]
    dec = results["decode"]
    assert {"limit_images_per_s", "flops_per_image", "batch", "single", "test_set_estimate_s"} <= set(dec)
    assert dec["flops_per_image"] == pytest.approx(
        2 * dec["flops_transformer_pass"] + dec["flops_vqgan_encode"] + dec["flops_vqgan_decode"])
    assert dec["single"]["latency_s"] > 0
    att = results["attention"]
    assert att["max_abs_diff"] < 1e-4 and att["op_speedup"] > 0 and att["forward_speedup"] > 0
    assert set(results["peak"]) == {"fp32", "bf16"}
    md = (tmp_path / "bench.md").read_text()
    assert "## Summary" in md and "AVX2" in md and "load average" in md and "single image" in md
    stored = json.loads((tmp_path / "bench.json").read_text())
    assert stored["command"] == "maskgit bench --quick --preset tiny" and "machine" in stored


def test_unknown_section_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown bench section"):
        bench.run_bench(tiny_options(tmp_path, ("warp",)))


def test_failed_section_is_reported_not_raised(tmp_path, monkeypatch):
    def boom(bench):
        raise RuntimeError("no weights here")

    monkeypatch.setitem(bench.SECTION_FUNCS, "fid", boom)
    results = bench.run_bench(tiny_options(tmp_path, ("fid",)))
    assert "no weights here" in results["errors"]["fid"]
    assert "Sections that failed" in (tmp_path / "bench.md").read_text()


def test_cli_flags_map_to_options():
    args = build_parser("bench").parse_args(["bench", "--quick", "--threads", "1", "--sections", "train,decode",
                                             "--decode-batch", "8"])
    opts = evaluate.options_from_args(args)
    assert opts.quick and opts.threads == 1 and opts.sections == ("train", "decode") and opts.decode_batch == 8
    assert opts.rounds == 1
    full = evaluate.options_from_args(build_parser("bench").parse_args(["bench"]))
    assert not full.quick and full.decode_batch == 64 and full.sections == speed.SECTIONS
    assert dataclasses.replace(full, quick=True).quick


def test_policy_probe_times_every_workload():
    times = threads.policy_probe("tiny", forward_batch=2, vqgan_batch=2, threads=1, rounds=1)
    assert set(times) == {"matmul_1024", "transformer_forward", "transformer_forward_b1", "vqgan_train_step"}
    assert all(t > 0 for t in times.values())
