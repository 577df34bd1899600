"""jetmamba doctor: honest on this machine (no Jetson, no TensorRT), and on a fake Jetson tree."""

from __future__ import annotations

import json

from jetson_outputs import CLOCKS_FREE, CLOCKS_LOCKED, NVPMODEL_25W, fake_jetson_root, fake_runner

from jetmamba.runtime.doctor import STATUSES, Environment, format_doctor, run_doctor

NAMES = ["Jetson / L4T", "CUDA compiler (nvcc)", "CUDA runtime (libcudart)", "GPU", "TensorRT (python)",
         "device buffers (cuda-python / pycuda)", "ONNX Runtime", "cmake", "plugin library"]  # fmt: skip


def checks(report) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def test_doctor_on_a_fake_jetson(tmp_path):
    root = fake_jetson_root(tmp_path)
    run = fake_runner({"nvpmodel": (0, NVPMODEL_25W), "jetson_clocks": (0, CLOCKS_FREE)})
    report = run_doctor(env=Environment(root=root, run=run, which=lambda name: None))
    c = checks(report)
    assert c["Jetson / L4T"]["status"] == "ok" and "L4T 36.4.3, JetPack 6.2" in c["Jetson / L4T"]["found"]
    assert c["board"]["status"] == "ok" and c["board"]["found"].startswith("orin-nano-8gb")
    # 25W is a mode of the board, but not its fastest
    assert c["power mode"]["status"] == "warning" and "MAXN_SUPER" in c["power mode"]["fix"]
    assert c["clocks"]["status"] == "warning" and "jetson_clocks" in c["clocks"]["fix"]
    assert c["CUDA compiler (nvcc)"]["status"] == "missing" and "cuda-toolkit" in c["CUDA compiler (nvcc)"]["fix"]
    assert c["cmake"]["status"] == "missing"
    assert report["gpu_arch"] == "sm_87" or c["GPU"]["found"].endswith("(torch.cuda)")
    assert all(x["status"] in STATUSES for x in report["checks"])
    assert all(x["fix"] for x in report["checks"] if x["status"] == "missing")


def test_doctor_on_a_tuned_jetson(tmp_path):
    root = fake_jetson_root(tmp_path)
    run = fake_runner({"nvpmodel": (0, "NV Power Mode: MAXN_SUPER\n2\n"), "jetson_clocks": (0, CLOCKS_LOCKED)})
    c = checks(run_doctor(env=Environment(root=root, run=run, which=lambda name: None)))
    assert c["power mode"]["status"] == "ok" and c["clocks"]["status"] == "ok"


def test_doctor_here_is_honest(capsys):
    from jetmamba.cli import main

    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    c = checks(report)
    assert list(c)[: len(NAMES)] == NAMES or set(NAMES) <= set(c)
    if not report["jetson"]["is_jetson"]:
        assert c["Jetson / L4T"]["status"] == "n/a" and "not a Jetson" in c["Jetson / L4T"]["found"]
    try:
        import tensorrt

        has_trt = getattr(tensorrt, "__file__", None) is not None
    except ImportError:
        has_trt = False
    if not has_trt:
        assert c["TensorRT (python)"]["status"] == "missing" and "no TensorRT" in c["TensorRT (python)"]["found"]
    assert c["plugin library"]["status"] in ("ok", "missing", "unknown")
    assert report["counts"]["ok"] == sum(x["status"] == "ok" for x in report["checks"])
    text = format_doctor(report)
    assert "fix:" in text or report["counts"]["missing"] == 0


def test_doctor_checks_a_bundle(tmp_path, capsys):
    from jetmamba.cli import main

    bad = tmp_path / "nothing"
    bad.mkdir()
    assert main(["doctor", "--bundle", str(bad), "--json"]) == 0  # the checks ran: exit 0
    c = checks(json.loads(capsys.readouterr().out))
    assert c["bundle"]["status"] == "missing" and "does not verify" in c["bundle"]["found"]
