"""Host description and honest matching, on faked host descriptions."""

from __future__ import annotations

import pytest
from bench_fixtures import fake_host, write_target

from edgeprune.errors import TargetError
from edgeprune.host import HostInfo, _cpuinfo, detect_host, match, runtime_kind_for
from edgeprune.targets import resolve_target

X86_CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni amx_int8 ht
"""
ARM_CPUINFO = """processor\t: 0
Features\t: fp asimd evtstrm aes asimddp i8mm
CPU part\t: 0xd0b
"""


def test_cpuinfo_parsing_keeps_speed_relevant_flags():
    model, flags = _cpuinfo(X86_CPUINFO)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert set(flags) == {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_int8"}
    assert set(_cpuinfo(ARM_CPUINFO)[1]) == {"asimd", "asimddp", "i8mm"}


def test_detect_host_describes_this_machine():
    host = detect_host()
    assert host.cores >= 1 and "CPUExecutionProvider" in host.ort_providers and host.ort_version
    assert host.host_id.startswith(host.arch)
    assert HostInfo.from_fingerprint(host.fingerprint()) == host


def test_host_id_changes_with_the_fingerprint():
    assert fake_host().host_id == fake_host().host_id
    assert fake_host().host_id != fake_host(isa_flags=("avx2",)).host_id


def test_cpu_target_on_matching_host_is_fully_honest():
    m = match(resolve_target("cpu-kiosk"), fake_host())
    assert m.matches and m.runnable and all(m.honest.values()) and m.reasons == []
    assert m.providers == ["CPUExecutionProvider"] and m.runtime == "cpu"


def test_arm_target_on_x86_measures_only_accuracy_and_size():
    m = match(resolve_target("arm-kiosk"), fake_host())
    assert m.runtime == "arm" and m.runnable and not m.matches
    assert (m.latency_honest, m.memory_honest, m.accuracy_honest, m.honest["size"]) == (False, False, True, True)
    assert "aarch64" in m.reason_for("latency") and "x86_64" in m.reason_for("memory")
    assert m.reason_for("accuracy") is None


def test_arm_target_on_arm_host_is_honest():
    host = fake_host(arch="aarch64", cpu_model="Cortex-A76", isa_flags=("asimd", "asimddp"), cores=4)
    m = match(resolve_target("arm-kiosk"), host)
    assert m.matches and all(m.honest.values())


def test_fewer_cores_than_threads_spoils_latency_only():
    m = match(resolve_target("arm-kiosk"), fake_host(arch="aarch64", cores=2))
    assert not m.latency_honest and m.memory_honest and "4 threads" in m.reason_for("latency")


def test_gpu_target_without_cuda_device_cannot_run():
    m = match(resolve_target("ampere-gpu"), fake_host())
    assert not m.runnable and m.runtime == "cuda"
    with pytest.raises(TargetError, match="cannot run on this host.*CUDA or TensorRT"):
        m.require_runnable()
    no_device = fake_host(ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    with pytest.raises(TargetError, match="no CUDA device"):
        match(resolve_target("ampere-gpu"), no_device).require_runnable()


def test_gpu_target_with_ampere_measures_and_older_gpu_spoils_latency():
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    a100 = fake_host(ort_providers=providers, gpu_name="NVIDIA A100", gpu_capability=8.0)
    m = match(resolve_target("ampere-gpu"), a100)
    assert m.matches and all(m.honest.values())
    assert m.providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    t4 = fake_host(ort_providers=providers[1:], gpu_name="Tesla T4", gpu_capability=7.5)
    m = match(resolve_target("ampere-gpu"), t4)
    assert m.runnable and not m.latency_honest and m.accuracy_honest and "sm8.0" in m.reason_for("latency")
    assert m.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_pinned_isa_flags(tmp_path):
    profile = resolve_target(str(write_target(tmp_path, extra='isa = ["avx2", "fma"]')))
    exact = fake_host(isa_flags=("avx2", "fma"))
    assert all(match(profile, exact).honest.values())
    faster = match(profile, fake_host())  # has avx512 and VNNI the device lacks
    assert not faster.latency_honest and "avx512_vnni" in faster.reason_for("latency")
    assert any("int8 kernels differ" in r for r in faster.reasons) and faster.accuracy_honest
    slower = match(profile, fake_host(isa_flags=("avx",)))
    assert not slower.latency_honest and "lacks" in slower.reason_for("latency")


def test_runtime_kinds_are_a_registry():
    assert runtime_kind_for(resolve_target("cpu-kiosk")).name == "cpu"
    assert runtime_kind_for(resolve_target("arm-kiosk")).name == "arm"
    assert runtime_kind_for(resolve_target("ampere-gpu")).torch_device == "cuda"
