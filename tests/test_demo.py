import subprocess
import sys

from mgrad.demo import demo, format_demo


def test_demo_reports_model_and_slice_inference():
    report = demo(features=(8, 16, 32, 64, 128), in_channels=1, out_channels=4, size=64, slices=3)
    assert report["output_shape"] == [1, 4, 64, 64, 3]
    assert report["parameters"] > 0 and report["gflops_per_forward"] > 0
    assert "SliceInferer" in format_demo(report)


def test_cli_demo_runs():
    args = ["demo", "--features", "[8,16,32,64,128]", "--in_channels", "1", "--size", "32", "--slices", "2"]
    result = subprocess.run([sys.executable, "-m", "mgrad", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "[1, 9, 32, 32, 2]" in result.stdout
