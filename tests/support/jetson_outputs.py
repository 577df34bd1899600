"""Real Jetson tool output for the tests of the Jetson probes and the benchmark, and a fake
tegrastats. Every tegrastats, nvpmodel and jetson_clocks output is quoted exactly from the source
named above it; sources found through the project's code index that the index did not name by
repository are given by the index's id for the file and what the file itself says about the machine.
"""

from __future__ import annotations

import sys

# Orin Nano 8GB, JetPack 6 (the same dump shows CUDA 12.6 and kernel 5.15.148-tegra): date prefix,
# no EMC_FREQ, GR3D_FREQ without a clock. A system-information dump in a public repository (code
# index id 47647917996; the index does not name the repository).
ORIN_NANO_JP6 = (
    "01-04-2025 16:02:59 RAM 1273/7620MB (lfb 1x4MB) SWAP 286/3810MB (cached 1MB) CPU [0%@1036,0%@1036,1%@1036,"
    "0%@1036,0%@729,0%@729] GR3D_FREQ 0% cpu@45.875C soc2@45.843C soc0@44.843C gpu@45.437C tj@46.312C soc1@46.312C "
    "VDD_IN 4968mW/4968mW VDD_CPU_GPU_CV 436mW/436mW VDD_SOC 1708mW/1708mW"
)
# Orin Nano 8GB, JetPack 6: EMC_FREQ and the bracketed GPU clock. A power-monitor script's docstring
# (code index id 18840107871, repository not named by the index).
ORIN_NANO_JP6_EMC = (
    "09-21-2025 15:38:17 RAM 3645/7620MB (lfb 63x4MB) SWAP 236/3810MB (cached 0MB) CPU [1%@729,1%@729,4%@729,"
    "1%@729,0%@729,0%@729] EMC_FREQ 0%@204 GR3D_FREQ 0%@[305] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 "
    "cpu@44.125C soc2@43.375C soc0@42.125C gpu@44.531C tj@44.531C soc1@43.156C VDD_IN 2957mW/2957mW "
    "VDD_CPU_GPU_CV 486mW/486mW VDD_SOC 1012mW/1012mW"
)
# Orin Nano (7486 MB: a newer release's memory map), a JetPack 7-style line: no SWAP field, a second
# figure on temperatures and a third on rails. A board bring-up log (code index id 68579880183); the
# same log has the nvpmodel and jetson_clocks output quoted further down.
ORIN_NANO_JP7 = (
    "09-19-2026 13:33:02 RAM 2850/7486MB (lfb 33x4MB) CPU [2%@729,0%@729,0%@729,0%@729,1%@729,0%@729] EMC_FREQ "
    "5%@665 GR3D_FREQ 0%@[305] NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off APE 200 cpu@45.812C/45.812C "
    "soc2@44.843C/44.843C soc0@46.093C/46.093C gpu@46.843C/46.843C tj@46.843C/46.843C soc1@46.281C/46.281C "
    "VDD_IN 3582mW/3582mW/3582mW VDD_CPU_GPU_CV 523mW/523mW/523mW VDD_SOC 1127mW/1127mW/1127mW"
)
# Orin NX 16GB (15388 MB, 8 cores), JetPack 5 style: upper-case sensors, GR3D_FREQ 0%@611.
# DataDog/datadog-agent, pkg/collector/corechecks/nvidia/jetson/jetson_test.go, voltageUnitSample.
ORIN_NX_JP5 = (
    "RAM 6334/15388MB (lfb 1770x4MB) SWAP 491/7694MB (cached 0MB) CPU [6%@729,9%@729,5%@729,16%@729,off,off,off,"
    "off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@611 VIC_FREQ 729 APE 174 CV0@45.812C CPU@47.937C SOC2@46.093C SOC0@46.968C "
    "CV1@46.406C GPU@45.875C tj@48.875C SOC1@48.875C CV2@45.75C VDD_IN 5299mW/5299mW VDD_CPU_GPU_CV 773mW/773mW "
    "VDD_SOC 1424mW/1424mW"
)
# Orin NX 16GB (15656 MB, 8 cores), JetPack 6 style, under load. A tegrastats log in a public
# repository (code index id 60371000082, repository not named by the index).
ORIN_NX_JP6 = (
    "08-21-2026 18:23:37 RAM 15031/15656MB (lfb 1x4MB) SWAP 7400/7828MB (cached 2MB) CPU [80%@1984,80%@1984,"
    "100%@1984,76%@1984,87%@1574,67%@1574,70%@1574,76%@1574] GR3D_FREQ 50% cv0@54.406C cpu@56.531C soc2@53.718C "
    "soc0@54.718C cv1@54C gpu@53.718C tj@56.531C soc1@55.812C cv2@54.093C VDD_IN 10187mW/8251mW "
    "VDD_CPU_GPU_CV 5077mW/3145mW VDD_SOC 1974mW/1938mW"
)
# AGX Orin 32GB (30697 MB, 12 cores), L4T r36: AGX rails, two GPC clocks, irregular spacing.
# DataDog/datadog-agent, pkg/collector/corechecks/nvidia/jetson/jetson_test.go, r36Sample.
AGX_ORIN_R36 = (
    "RAM 29114/30697MB (lfb 3x4MB)    SWAP 4915/15348MB (cached 1MB) CPU [3%@729,4%@729,0%@729,1%@729,0%@2201,"
    "100%@2201,1%@2201,0%@2201,100%@2201,0%@2201,0%@2201,0%@2201] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[305,305] "
    "NVENC      off  NVDEC    off NVJPG off NVJPG1    off         VIC        off          OFA           off          "
    "NVDLA0    off       NVDLA1     off          PVA0_FREQ off         APE           174        cpu@53.062C "
    "soc2@48.25C soc0@48.843C  gpu@47.812C tj@53.062C soc1@48.968C    VDD_GPU_SOC 3205mW/3205mW VDD_CPU_CV "
    "4405mW/4405mW VIN_SYS_5V0 4767mW/4767mW"
)
# AGX Orin 64GB (62840 MB): whole-degree temperatures. Same file, orinSample.
AGX_ORIN_64 = (
    "RAM 2448/62840MB (lfb 2x4MB) SWAP 0/31420MB (cached 0MB) CPU [0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,"
    "0%@2201,0%@2201,0%@2201,0%@2201,0%@2201,0%@2201] GR3D_FREQ 0% cpu@42C soc2@37.843C soc0@39.187C gpu@37.75C "
    "tj@42C soc1@37.937C VDD_GPU_SOC 4940mW/4940mW VDD_CPU_CV 988mW/988mW VIN_SYS_5V0 4442mW/4442mW"
)
# AGX Orin 64GB with the DLA busy: upper-case sensors, a fourth rail (VDDQ_VDD2_1V8AO), NVDLA0_FREQ
# without a load. A README's `sudo tegrastats --interval 100 | grep -i dla` (code index id 8329726155).
AGX_ORIN_DLA = (
    "11-21-2025 08:49:48 RAM 13983/62780MB (lfb 424x4MB) SWAP 126/31390MB (cached 0MB) CPU [90%@2201,100%@2201,"
    "100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201,100%@2201] "
    "EMC_FREQ 1%@2133 GR3D_FREQ 14%@[407,407] VIC_FREQ 115 NVDLA0_FREQ @1600 APE 174 CV0@73.625C CPU@77.281C "
    "Tboard@62C SOC2@70C Tdiode@62.25C SOC0@69.531C CV1@72.5C GPU@69.125C tj@77.281C SOC1@68.968C CV2@67.25C "
    "VDD_GPU_SOC 3150mW/2971mW VDD_CPU_CV 14312mW/12415mW VIN_SYS_5V0 4968mW/5048mW VDDQ_VDD2_1V8AO 1091mW/1091mW"
)
# Xavier NX (before Orin): rails without a unit. DataDog/datadog-agent jetson_test.go, xavierNxSample.
XAVIER_NX = (
    "RAM 4412/7772MB (lfb 237x4MB) SWAP 139/3886MB (cached 2MB) CPU [9%@1190,6%@1190,6%@1190,5%@1190,4%@1190,"
    "8%@1267] EMC_FREQ 10%@1600 GR3D_FREQ 62%@306 APE 150 MTS fg 0% bg 0% AO@41.5C GPU@43C PMIC@100C AUX@41.5C "
    "CPU@43.5C thermal@42.55C VDD_IN 4067/4067 VDD_CPU_GPU_CV 738/738 VDD_SOC 1353/1353"
)

# Orin Nano Super in MAXN_SUPER after `sudo jetson_clocks` (the "..." is the author's elision).
# A setup note in a public repository (code index id 56269410496).
CLOCKS_LOCKED = """\
SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super
Online CPUs: 0-5
cpu0: Online=1 Governor=schedutil MinFreq=1728000 MaxFreq=1728000 CurrentFreq=1728000
cpu1: Online=1 Governor=schedutil MinFreq=1728000 MaxFreq=1728000 CurrentFreq=1728000
...
GPU MinFreq=1020000000 MaxFreq=1020000000 CurrentFreq=1020000000
Active GPU TPCs: 8
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
FAN Dynamic Speed Control=kernel hwmon0_pwm1=88
NV Power Mode: MAXN_SUPER
"""
# Orin Nano Super in 25W, clocks free (the bring-up log of ORIN_NANO_JP7, code index id 68579880183).
CLOCKS_FREE = """\
SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super
Online CPUs: 0-5, Offline CPUs: \n\
cpu0:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=960000 IdleStates: WFI=1 c7=1 \n\
cpu1:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=960000 IdleStates: WFI=1 c7=1 \n\
cpu2:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1344000 IdleStates: WFI=1 c7=1 \n\
cpu3:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1344000 IdleStates: WFI=1 c7=1 \n\
cpu4:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1344000 IdleStates: WFI=1 c7=1 \n\
cpu5:  Governor=schedutil MinFreq=729600 MaxFreq=1344000 CurrentFreq=1267200 IdleStates: WFI=1 c7=1 \n\
GPU MinFreq=306000000 MaxFreq=918000000 CurrentFreq=306000000
Active GPU TPCs: 4
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=665600000
FAN Dynamic Speed Control=nvfancontrol hwmon0_pwm1=60
"""
NVPMODEL_25W = "NV Power Mode: 25W\n1\n"  # the same log's `nvpmodel -q`

FAKE_TEGRASTATS = """\
import sys, time
lines = {lines!r}
print("not a tegrastats line", flush=True)
for i in range(10000):
    print(lines[i % len(lines)], flush=True)
    time.sleep(0.02)
"""


def fake_tegrastats(tmp_path, lines) -> list[str]:
    script = tmp_path / "tegrastats.py"
    script.write_text(FAKE_TEGRASTATS.format(lines=list(lines)))
    return [sys.executable, str(script)]


# MemTotal of an Orin Nano 8GB (the same dump as ORIN_NANO_JP6): 7802736 kB
ORIN_NANO_MEMINFO = "MemTotal:        7802736 kB\nMemFree:         3668508 kB\n"


def fake_jetson_root(root, model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"):
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    (root / "proc/meminfo").write_text(ORIN_NANO_MEMINFO)
    (root / "etc").mkdir()
    (root / "etc/nv_tegra_release").write_text(
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 "
        "UTC 2025\n# KERNEL_VARIANT: oot\n"
    )
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("Package: nvidia-l4t-core\nVersion: 36.4.3-20250107174145\n\n")
    return root


def fake_runner(outputs):
    calls = []

    def run(argv):
        calls.append(list(argv))
        return outputs.get(argv[0])

    run.calls = calls
    return run
