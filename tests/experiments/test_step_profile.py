"""experiments/bench/step_profile.py: kernel kinds and time sums against hand-computed cases."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "bench"))
import step_profile  # pylint: disable=wrong-import-position
import train as bench_train  # pylint: disable=wrong-import-position

K = step_profile.Kernel


@pytest.mark.parametrize("name, expected", [
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_3_64x64x64", "attention"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16_knob_7", "attention"),
    ("nvjet_tst_128x256_64x4_2x1_v_bz_coopA_TNT", "matmul"),
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("triton_gemm_dot_general_3", "matmul"),
    ("ncclDevKernel_AllGather_RING_LL", "collective"),
    ("Memcpy DtoD (Device -> Device)", "copy"),
    ("loop_multiply_fusion_12", "other"),
    ("input_reduce_fusion_3", "other"),
])
def test_kind_of_real_kernel_names(name, expected):
  assert step_profile.kind(K(name, 0, 1)) == expected


def test_breakdown_sums_kinds_and_counts_overlap_once():
  """Two streams: a GEMM [0, 40) ns overlapping attention [30, 100), then a fusion [120, 130):
  busy = 100 + 10 = 110 ns of a 200 ns step, idle 90 ns; each kind gets its own duration."""
  kernels = [K("nvjet_gemm", 0, 40), K("fmha_fprop", 30, 70), K("loop_fusion", 120, 10),
             K("nvjet_gemm", 150, 20)]
  out = step_profile.breakdown(kernels, wall_s=200e-9)
  assert out["kernels"] == 4
  assert out["busy_s"] == pytest.approx(130e-9)  # [0,100) + [120,130) + [150,170)
  assert out["idle_s"] == pytest.approx(70e-9)
  assert out["seconds"]["matmul"] == pytest.approx(60e-9)
  assert out["seconds"]["attention"] == pytest.approx(70e-9)
  assert out["seconds"]["other"] == pytest.approx(10e-9)
  assert out["share_of_wall"]["attention"] == pytest.approx(0.35)
  assert out["top"][0] == {"name": "fmha_fprop", "calls": 1, "seconds": pytest.approx(70e-9),
                           "kind": "attention"}
  assert [t["name"] for t in out["top"]] == ["fmha_fprop", "nvjet_gemm", "loop_fusion"]
  assert out["top"][1]["calls"] == 2


def test_union_of_nested_intervals():
  """[0, 100) holds [10, 20) and [50, 150) reaches past it: the union is [0, 150)."""
  assert step_profile._union_ns([K("a", 0, 100), K("b", 10, 10), K("c", 50, 100)]) == 150


def test_profile_flag_records_a_breakdown_on_cpu(tmp_path, monkeypatch):
  """--profile traces the last timed step; on the CPU the trace has no GPU kernels, and the
  record says so instead of inventing a breakdown."""
  monkeypatch.setitem(bench_train.CASES, "tiny_prof", bench_train.Case(
      "tiny", 256, (bench_train.SAVE,), steps=1, loss_chunk=128))
  monkeypatch.setattr(sys, "argv", ["train.py", "--cases", "tiny_prof", "--warmup", "0",
                                    "--profile", "--out", str(tmp_path)])
  assert bench_train.main() == 0
  record = json.loads((tmp_path / "train_bench.json").read_text())[0]
  assert record["profile"]["profiled_step"] == 1
  assert record["profile"]["kernels"] == 0 and "no device kernels" in record["profile"]["note"]
  assert record["profile"]["wall_s"] == pytest.approx(record["step_times"][-1])
