"""Target profiles: what a device is (arch, providers, threads, formats that pay off there) and what a
release must meet on it (latency, memory, size, accuracy budgets).

A profile is frozen data read from `NAME.toml`; it is validated when constructed, so an unknown key or
a bad value is a `TargetError` naming the field. Profiles come from a registry that refuses duplicate
names and lists the valid ones on a miss:

- built-ins: `targets/` at the repository root (a source checkout or an editable install), or the same
  files installed by a wheel as data files under `<prefix>/share/edgeprune/targets` (a normal install;
  see `[tool.setuptools.data-files]` in pyproject.toml);
- user folders: every `*.toml` in the folders of the `EDGEPRUNE_TARGETS_PATH` environment variable
  (separated like PATH);
- plug-ins: entry points in the group `edgeprune.targets`, each resolving to a `TargetProfile`, a path
  to a `.toml` file or a folder of them, or a callable returning any number of those.

Wherever a command takes `--target`, `resolve_target` accepts a registered name or a path to a `.toml`.

Budgets: a budget of 0.0 means "not set yet" (the built-ins ship placeholders until the kiosk figures are
measured). Gate reports an unset budget as "no limit set" and lets it pass, but lists it, so a release
pipeline sees which limits it is not enforcing. To demand a figure be exactly zero use a tiny positive
limit instead. `budget.optional` names the budgets whose figure may be left unmeasured on a host that
cannot measure it honestly (otherwise an unmeasured figure fails its budget).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import TargetError
from .hashing import sha256_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

ARCHES = ("x86_64", "aarch64")
FORMATS = ("structured", "csr", "coo", "2:4", "dense")
QUANTIZATIONS = ("none", "int8-dynamic", "int8-dynamic-per-channel", "int8-static", "fp16")
ENV_VAR = "EDGEPRUNE_TARGETS_PATH"
ENTRY_POINT_GROUP = "edgeprune.targets"
BUILTIN_DIR = Path(__file__).resolve().parents[1] / "targets"
INSTALLED_SUBDIR = ("share", "edgeprune", "targets")


def _fail(where: str, field_name: str, problem: str, fix: str) -> TargetError:
    return TargetError(f"{where}: {field_name} {problem}", fix)


def _check_number(where: str, name: str, value: Any, *, low: float = 0.0, high: float = math.inf,
                  integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise _fail(where, name, f"must be {'an integer' if integer else 'a number'}, got {value!r}",
                    f"set {name} to a {'whole ' if integer else ''}number")
    if not low <= value <= high:
        bound = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise _fail(where, name, f"must be {bound}, got {value!r}", f"set {name} {bound}")


def _check_choice(where: str, name: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise _fail(where, name, f"is {value!r}, not one of {list(choices)}",
                    f"set {name} to one of {', '.join(choices)}")


@dataclass(frozen=True)
class Workload:
    """The inputs latency is measured on: batch size and sequence length ("dataset" = real eval lengths)."""

    batch_size: int = 1
    sequence_length: int | str = 64
    where: str = field(default="workload", compare=False, repr=False)

    def __post_init__(self):
        _check_number(self.where, "workload.batch_size", self.batch_size, low=1, integer=True)
        if self.sequence_length != "dataset":
            if isinstance(self.sequence_length, str):
                raise _fail(self.where, "workload.sequence_length",
                            f"is {self.sequence_length!r}, not a whole number or \"dataset\"",
                            'set it to a token count such as 64, or to "dataset"')
            _check_number(self.where, "workload.sequence_length", self.sequence_length, low=1, integer=True)

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "sequence_length": self.sequence_length}


# budget field -> (the report figure it limits, "max" or "min", unit for humans)
BUDGET_FIGURES: dict[str, tuple[str, str, str]] = {
    "latency_p95_ms": ("latency_ms.p95", "max", "ms"),
    "max_accuracy_drop": ("accuracy_drop", "max", ""),
    "min_accuracy": ("accuracy", "min", ""),
    "max_bundle_mb": ("bundle_mb", "max", "MB"),
    "max_peak_rss_mb": ("peak_rss_mb", "max", "MB"),
}


@dataclass(frozen=True)
class Budget:
    """Limits a release must meet on the target; 0.0 = not set yet (gate lists it and lets it pass)."""

    latency_p95_ms: float = 0.0
    max_accuracy_drop: float = 0.0
    min_accuracy: float = 0.0
    max_bundle_mb: float = 0.0
    max_peak_rss_mb: float = 0.0
    optional: tuple[str, ...] = ()
    where: str = field(default="budget", compare=False, repr=False)

    def __post_init__(self):
        for name in BUDGET_FIGURES:
            high = 1.0 if name in ("max_accuracy_drop", "min_accuracy") else math.inf
            _check_number(self.where, f"budget.{name}", getattr(self, name), high=high)
        if isinstance(self.optional, str) or not isinstance(self.optional, (list, tuple)):
            raise _fail(self.where, "budget.optional", f"must be a list of budget names, got {self.optional!r}",
                        f"list some of {', '.join(BUDGET_FIGURES)}")
        for name in self.optional:
            _check_choice(self.where, "budget.optional", name, BUDGET_FIGURES)
        object.__setattr__(self, "optional", tuple(self.optional))

    def limits(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in BUDGET_FIGURES}

    def to_dict(self) -> dict[str, Any]:
        return {**self.limits(), "optional": list(self.optional)}


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str
    arch: str
    providers: tuple[str, ...]
    threads: int
    formats: tuple[str, ...]
    quantization: str
    workload: Workload = Workload()
    budget: Budget = Budget()
    # the device's speed-relevant ISA flags (as /proc/cpuinfo names them, e.g. "avx2", "avx512_vnni");
    # empty = not pinned, any host of the arch counts as matching. See edgeprune.host.
    isa: tuple[str, ...] = ()
    # lowest GPU compute capability the profile's formats pay off on (8.0 = Ampere, for 2:4); 0 = any
    min_gpu_capability: float = 0.0
    # "full": ship the model's whole vocabulary; "train": trim the embeddings to the tokens the training
    # split uses plus every character (see edgeprune.convert.vocab), verified like int8
    vocabulary: str = "full"
    # "same": the word embeddings are quantized like the other weights; "int4": stored in 4-bit blocks
    # (onnxruntime's block grid, served by stock ops, see edgeprune.convert.embeddings): the whole vocabulary at a
    # third of int8's bytes, without the trimmed vocabulary's changed tokenization
    embeddings: str = "same"
    source: str = field(default="<python>", compare=False)

    def __post_init__(self):
        where = self.source
        if not isinstance(self.name, str) or not self.name or not all(
                c.isalnum() or c in "-_." for c in self.name):
            raise _fail(where, "name", f"must be a non-empty name of letters, digits, '-', '_', got {self.name!r}",
                        'set name = "my-device"')
        if not isinstance(self.description, str):
            raise _fail(where, "description", "must be a string", 'set description = "..."')
        _check_choice(where, "arch", self.arch, ARCHES)
        for list_name in ("providers", "formats"):
            value = getattr(self, list_name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
                raise _fail(where, list_name, f"must be a non-empty list, got {value!r}",
                            f'set {list_name} = ["..."]')
            odd = [v for v in value if not isinstance(v, str)]
            if odd:
                raise _fail(where, list_name, f"must list names (strings), has {odd[0]!r}",
                            f'set {list_name} = ["...", "..."]')
            if len(set(value)) != len(value):
                raise _fail(where, list_name, f"lists a value twice: {list(value)}", "remove the repeat")
            object.__setattr__(self, list_name, tuple(value))
        for p in self.providers:
            if not isinstance(p, str) or not p.endswith("ExecutionProvider"):
                raise _fail(where, "providers", f"has {p!r}, not an onnxruntime provider name",
                            'use names such as "CPUExecutionProvider" or "CUDAExecutionProvider"')
        for f in self.formats:
            _check_choice(where, "formats", f, FORMATS)
        _check_number(where, "threads", self.threads, low=1, integer=True)
        _check_choice(where, "quantization", self.quantization, QUANTIZATIONS)
        if isinstance(self.isa, str) or not isinstance(self.isa, (list, tuple)) or not all(
                isinstance(flag, str) and flag for flag in self.isa):
            raise _fail(where, "isa", f"must be a list of CPU flag names, got {self.isa!r}",
                        'set isa = ["avx2"], or leave it out')
        object.__setattr__(self, "isa", tuple(self.isa))
        _check_number(where, "min_gpu_capability", self.min_gpu_capability, high=20.0)
        _check_choice(where, "vocabulary", self.vocabulary, VOCABULARIES)
        _check_choice(where, "embeddings", self.embeddings, EMBEDDINGS)
        if not isinstance(self.workload, Workload) or not isinstance(self.budget, Budget):
            raise _fail(where, "workload/budget", "must be Workload and Budget objects", "build them first")

    @property
    def gpu(self) -> bool:
        return any(p in GPU_PROVIDERS for p in self.providers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "providers": list(self.providers),
            "threads": self.threads,
            "formats": list(self.formats),
            "quantization": self.quantization,
            "workload": self.workload.to_dict(),
            "budget": self.budget.to_dict(),
            "isa": list(self.isa),
            "min_gpu_capability": self.min_gpu_capability,
            "vocabulary": self.vocabulary,
            "embeddings": self.embeddings,
        }

    def sha256(self) -> str:
        """Identity of the profile's content (not where it was read from): for up-to-date checks."""
        return sha256_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "TargetProfile":
        data = dict(data)
        _reject_unknown(source, "", data, {"name", "description", "arch", "providers", "threads", "formats",
                                           "quantization", "workload", "budget", "isa",
                                           "min_gpu_capability", "vocabulary", "embeddings"})
        missing = [k for k in ("name", "arch", "providers", "threads", "formats", "quantization") if k not in data]
        if missing:
            raise TargetError(f"{source}: missing required key(s) {missing}",
                              "add them; see `edgeprune targets cpu-kiosk` for a complete profile")
        workload = data.pop("workload", {})
        budget = data.pop("budget", {})
        for section, value in (("workload", workload), ("budget", budget)):
            if not isinstance(value, Mapping):
                raise _fail(source, section, "must be a table", f"write it as [{section}]")
        _reject_unknown(source, "workload.", workload, {"batch_size", "sequence_length"})
        _reject_unknown(source, "budget.", budget, set(BUDGET_FIGURES) | {"optional"})
        return cls(
            description=data.pop("description", ""),
            workload=Workload(**workload, where=source),
            budget=Budget(**budget, where=source),
            source=source,
            **data,
        )


GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
VOCABULARIES = ("full", "train")
EMBEDDINGS = ("same", "int4")


def _reject_unknown(where: str, prefix: str, data: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise TargetError(f"{where}: unknown key {prefix}{unknown[0]}",
                          f"valid keys{' under [' + prefix[:-1] + ']' if prefix else ''}: {', '.join(sorted(known))}")


def load_target_file(path: Path) -> TargetProfile:
    path = Path(path)
    if not path.is_file():
        raise TargetError(f"target file {path} does not exist", "pass a built-in name or a path to a .toml file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetError(f"{path} is not valid TOML ({exc})", "fix the syntax") from exc
    return TargetProfile.from_dict(data, source=str(path))


# ---------------------------------------------------------------------------------------------- registry


class TargetRegistry:
    """Name -> profile; refuses a name defined twice, lists the valid names on a miss."""

    def __init__(self):
        self._profiles: dict[str, TargetProfile] = {}

    def register(self, profile: TargetProfile) -> None:
        if not isinstance(profile, TargetProfile):
            raise TargetError(f"cannot register {profile!r}: not a TargetProfile", "register TargetProfile objects")
        if profile.name in self._profiles:
            raise TargetError(
                f"target {profile.name!r} is defined twice ({self._profiles[profile.name].source} and "
                f"{profile.source})",
                "rename or remove one of them",
            )
        self._profiles[profile.name] = profile

    def register_folder(self, folder: Path) -> None:
        for file in sorted(Path(folder).glob("*.toml")):
            profile = load_target_file(file)
            if profile.name != file.stem:
                raise TargetError(f"{file}: name {profile.name!r} differs from the file name",
                                  f"rename the file to {profile.name}.toml or set name = {file.stem!r}")
            self.register(profile)

    def register_entry_point_value(self, value: Any, origin: str) -> None:
        if isinstance(value, TargetProfile):
            self.register(value)
        elif isinstance(value, (str, Path)):
            path = Path(value)
            if path.is_dir():
                self.register_folder(path)
            else:
                self.register(load_target_file(path))
        elif callable(value):
            for item in value():
                self.register_entry_point_value(item, origin)
        else:
            raise TargetError(f"entry point {origin} gave {type(value).__name__}",
                              "make it a TargetProfile, a .toml path or folder, or a callable returning them")

    def get(self, name: str) -> TargetProfile:
        try:
            return self._profiles[name]
        except KeyError:
            raise TargetError(f"unknown target {name!r}",
                              f"use one of: {', '.join(sorted(self._profiles)) or '(none found)'}, "
                              "or a path to a .toml file") from None

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def profiles(self) -> list[TargetProfile]:
        return [self._profiles[n] for n in self.names()]


def builtin_folder() -> Path | None:
    """targets/ beside the package (checkout, editable install), else the copy a wheel installed as data
    files under the environment's (or the user's) data prefix."""
    import sysconfig

    candidates = [BUILTIN_DIR]
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:  # no user scheme on this platform
            continue
        candidates.append(Path(data).joinpath(*INSTALLED_SUBDIR))
    for folder in candidates:
        if folder.is_dir() and any(folder.glob("*.toml")):
            return folder
    return None


def default_registry() -> TargetRegistry:
    """A fresh registry of built-ins, EDGEPRUNE_TARGETS_PATH folders and entry points (read each call, so
    a user editing a profile sees the change at once)."""
    registry = TargetRegistry()
    folder = builtin_folder()
    if folder is not None:
        registry.register_folder(folder)
    for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if entry:
            if not Path(entry).is_dir():
                raise TargetError(f"{ENV_VAR} names {entry}, which is not a folder",
                                  f"fix {ENV_VAR} or create the folder")
            registry.register_folder(Path(entry))
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            value = ep.load()
        except Exception as exc:  # a broken plug-in is the user's to fix, named in one line
            raise TargetError(f"entry point {ep.name} ({ep.value}) failed to load ({exc})",
                              "fix or uninstall the package that provides it") from exc
        registry.register_entry_point_value(value, f"{ep.name} ({ep.value})")
    return registry


def list_targets() -> list[TargetProfile]:
    return default_registry().profiles()


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".toml") or os.sep in name_or_path or "/" in name_or_path


def resolve_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """A registered name, or a path to a .toml file, -> its validated profile."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        return load_target_file(Path(text))
    return default_registry().get(text)


def replace_budget(profile: TargetProfile, **limits: float) -> TargetProfile:
    """A copy of `profile` with some budgets changed (validated again)."""
    return dataclasses.replace(profile, budget=dataclasses.replace(profile.budget, **limits))
