import os
import platform

import torch

import fastpose

from _common import measure_copy_bandwidth


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Stores the devices and their measured copy bandwidths in the JSON for bench/report.py."""
    info = fastpose.build_info()
    machine_info["fastpose"] = {k: str(v) for k, v in info.items()}
    machine_info["cpu_name"] = _cpu_name()
    bw = {"cpu:1": measure_copy_bandwidth("cpu", threads=1),
          f"cpu:{torch.get_num_threads()}": measure_copy_bandwidth("cpu", threads=torch.get_num_threads())}
    if torch.cuda.is_available():
        machine_info["gpu_name"] = torch.cuda.get_device_name()
        bw["cuda"] = measure_copy_bandwidth("cuda", nbytes=1 << 30, reps=20)
    machine_info["copy_bandwidth_gbs"] = bw
    machine_info["FASTPOSE_ISA"] = os.environ.get("FASTPOSE_ISA", "auto")
