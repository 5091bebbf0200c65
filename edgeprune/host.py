"""What machine we are on, and which of a target's figures it can measure honestly.

`detect_host()` describes this machine (arch, CPU model, speed-relevant ISA flags, cores, onnxruntime
version and providers, GPU and its compute capability); `match(profile, host)` says which figures a bench
here would report truthfully. Benching never pretends: an aarch64 profile on an x86 host measures
accuracy and size and marks latency and memory as not measured, with the reason; a GPU profile on a host
without a CUDA device and the CUDA/TensorRT provider cannot run at all (`HostMatch.require_runnable`
raises a `TargetError`).

Each runtime kind (CPU x86-64, ARM, CUDA) is one `RuntimeKind` in a small registry; the first kind that
claims a profile does the matching. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TargetError
from .hashing import sha256_json
from .targets import GPU_PROVIDERS, TargetProfile

# flags that change which onnxruntime kernels run (speed, and for int8 also the exact numbers)
SPEED_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    # aarch64 /proc/cpuinfo "Features"
    "asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "fphp",
)
_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64"}


@dataclass(frozen=True)
class HostInfo:
    arch: str
    cpu_model: str
    isa_flags: tuple[str, ...]
    cores: int
    ort_version: str
    ort_providers: tuple[str, ...]
    gpu_name: str | None = None
    gpu_capability: float | None = None  # e.g. 8.0 for A100, 8.6 for RTX 30xx

    @property
    def has_cuda_device(self) -> bool:
        return self.gpu_name is not None

    def fingerprint(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"isa_flags": list(self.isa_flags),
                                           "ort_providers": list(self.ort_providers)}

    @property
    def host_id(self) -> str:
        """Readable and stable: arch, a CPU/GPU slug and a hash of the whole fingerprint."""
        model = self.gpu_name or self.cpu_model
        slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")[:32] or "unknown"
        return f"{self.arch}-{slug}-{sha256_json(self.fingerprint())[:8]}"

    @classmethod
    def from_fingerprint(cls, data: dict[str, Any]) -> "HostInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["isa_flags"] = tuple(values.get("isa_flags", ()))
        values["ort_providers"] = tuple(values.get("ort_providers", ()))
        return cls(**values)


def _cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return model, tuple(f for f in SPEED_FLAGS if f in flags)


def _gpu() -> tuple[str | None, float | None]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, None
    try:
        out = subprocess.run([exe, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    first = next((line for line in out.splitlines() if line.strip()), "")
    name, _, cap = first.rpartition(",")
    if not name:
        return None, None
    try:
        return name.strip(), float(cap)
    except ValueError:
        return name.strip(), None


def detect_host(cpuinfo: Path = Path("/proc/cpuinfo")) -> HostInfo:
    import onnxruntime as ort

    arch = platform.machine().lower()
    arch = _ARCH_ALIASES.get(arch, arch)
    try:
        model, flags = _cpuinfo(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        model, flags = "", ()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    providers = tuple(ort.get_available_providers())
    gpu_name, gpu_cap = _gpu() if any(p in providers for p in GPU_PROVIDERS) else (None, None)
    return HostInfo(arch=arch, cpu_model=model or platform.processor() or "unknown", isa_flags=flags,
                    cores=cores, ort_version=ort.__version__, ort_providers=providers,
                    gpu_name=gpu_name, gpu_capability=gpu_cap)


# --------------------------------------------------------------------------------------------- matching

FIGURES = ("latency", "memory", "accuracy", "size")


@dataclass
class HostMatch:
    """Which figures of `profile` this host measures honestly; `reasons` say why any is not, or what
    differs from the device without spoiling a figure."""

    target: str
    runtime: str
    matches: bool
    runnable: bool = True
    honest: dict[str, bool] = field(default_factory=lambda: {f: True for f in FIGURES})
    reasons: list[str] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)  # what to hand onnxruntime, in order
    why_not: dict[str, list[str]] = field(default_factory=dict)  # figure -> reasons it is not honest

    @property
    def latency_honest(self) -> bool:
        return self.honest["latency"]

    @property
    def memory_honest(self) -> bool:
        return self.honest["memory"]

    @property
    def accuracy_honest(self) -> bool:
        return self.honest["accuracy"]

    def spoil(self, figures: tuple[str, ...], reason: str) -> None:
        for figure in figures:
            self.honest[figure] = False
            self.why_not.setdefault(figure, []).append(reason)
        self.matches = False
        self.reasons.append(reason)

    def note(self, reason: str) -> None:
        """A difference that is worth saying but leaves every figure honest."""
        self.reasons.append(reason)

    def reason_for(self, figure: str) -> str | None:
        if self.honest[figure]:
            return None
        return "; ".join(self.why_not.get(figure, ())) or "host does not match the target"

    def require_runnable(self) -> None:
        if not self.runnable:
            raise TargetError(f"target {self.target!r} cannot run on this host: {'; '.join(self.reasons)}",
                              "bench it on a host that has the device, or choose another --target")

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.runtime, "matches": self.matches,
                "runnable": self.runnable, "honest": dict(self.honest), "reasons": list(self.reasons),
                "providers": list(self.providers)}


class RuntimeKind:
    """One way of running a bundle (CPU x86-64, ARM, CUDA): claims profiles and judges hosts for them."""

    name = "base"
    torch_device = "cpu"  # where the PyTorch eager baseline runs

    def claims(self, profile: TargetProfile) -> bool:
        raise NotImplementedError

    def match(self, profile: TargetProfile, host: HostInfo) -> HostMatch:
        raise NotImplementedError


def _check_threads(m: HostMatch, profile: TargetProfile, host: HostInfo) -> None:
    if host.cores < profile.threads:
        m.spoil(("latency",), f"the profile runs {profile.threads} threads but this host has {host.cores} cores")


def _check_isa(m: HostMatch, profile: TargetProfile, host: HostInfo) -> None:
    if not profile.isa:
        return
    device, here = set(profile.isa), set(host.isa_flags)
    missing = sorted(device - here)
    extra = sorted((here - device) & set(SPEED_FLAGS))
    if missing:
        m.spoil(("latency",), f"this host lacks the device's ISA flags {missing}")
    if extra:
        m.spoil(("latency",), f"this host has ISA flags the device lacks {extra}, so onnxruntime picks faster "
                              "kernels than the device would")
    if (missing or extra) and profile.quantization.startswith("int8"):
        m.note("int8 kernels differ by ISA, so accuracy here may differ slightly from the device's")


@dataclass
class CpuRuntime(RuntimeKind):
    """The CPU execution provider on one architecture (x86_64: cpu; aarch64: arm)."""

    arch: str
    name: str

    def claims(self, profile: TargetProfile) -> bool:
        return not profile.gpu and profile.arch == self.arch

    def match(self, profile: TargetProfile, host: HostInfo) -> HostMatch:
        m = HostMatch(profile.name, self.name, matches=True,
                      providers=[p for p in profile.providers if p in host.ort_providers])
        if not m.providers:
            m.runnable = False
            m.spoil(FIGURES, f"onnxruntime here offers none of the profile's providers {list(profile.providers)}")
            return m
        if host.arch != profile.arch:
            m.spoil(("latency", "memory"),
                    f"the target is {profile.arch} but this host is {host.arch}: latency and memory here say "
                    "nothing about the device")
            m.note(f"accuracy and size are measured with {host.arch} kernels through the same execution "
                   "provider")
            return m
        _check_threads(m, profile, host)
        _check_isa(m, profile, host)
        return m


class CudaRuntime(RuntimeKind):
    """CUDA or TensorRT execution provider on an NVIDIA GPU."""

    name = "cuda"
    torch_device = "cuda"

    def claims(self, profile: TargetProfile) -> bool:
        return profile.gpu

    def match(self, profile: TargetProfile, host: HostInfo) -> HostMatch:
        gpu_providers = [p for p in profile.providers if p in GPU_PROVIDERS and p in host.ort_providers]
        m = HostMatch(profile.name, self.name, matches=True,
                      providers=gpu_providers + ["CPUExecutionProvider"])
        if not gpu_providers or not host.has_cuda_device:
            m.runnable = False
            why = ("onnxruntime here has no CUDA or TensorRT execution provider (install onnxruntime-gpu)"
                   if not gpu_providers else "no CUDA device was found (nvidia-smi)")
            m.spoil(FIGURES, why)
            return m
        if profile.min_gpu_capability and (host.gpu_capability or 0.0) < profile.min_gpu_capability:
            m.spoil(("latency",), f"the GPU here ({host.gpu_name}, sm{host.gpu_capability}) is below the "
                                  f"profile's sm{profile.min_gpu_capability}, where its formats pay off")
        if host.arch != profile.arch:
            m.note(f"the host CPU is {host.arch}, the profile's {profile.arch}")
        return m


RUNTIME_KINDS: list[RuntimeKind] = [CudaRuntime(), CpuRuntime("x86_64", "cpu"), CpuRuntime("aarch64", "arm")]


def register_runtime_kind(kind: RuntimeKind) -> None:
    if any(k.name == kind.name for k in RUNTIME_KINDS):
        raise TargetError(f"runtime kind {kind.name!r} is registered twice", "give it another name")
    RUNTIME_KINDS.insert(0, kind)


def runtime_kind_for(profile: TargetProfile) -> RuntimeKind:
    for kind in RUNTIME_KINDS:
        if kind.claims(profile):
            return kind
    raise TargetError(f"no runtime kind runs target {profile.name!r} ({profile.arch}, {list(profile.providers)})",
                      f"known kinds: {', '.join(k.name for k in RUNTIME_KINDS)}")


def match(profile: TargetProfile, host: HostInfo) -> HostMatch:
    return runtime_kind_for(profile).match(profile, host)
