"""The pruner owns the masks of one model across a training run.

It resolves which layers each modifier touches, recomputes masks at pruning events (structured first,
then N:M, then magnitude on what is left), and keeps pruned weights exactly zero: gradients are masked
before the optimizer step, and weights *and* optimizer state (Adam moments, momentum) after it, so no
update can revive a pruned weight. Its state saves and loads, so a resumed run ends with the same masks.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from . import masks as M
from .errors import RecipeError
from .layout import LayerLayout, encoder_layout
from .recipe import ModifierConfig
from .schedule import is_pruning_event, resolve_step, sparsity_at

STATE_JSON = "pruner_state.json"
STATE_TENSORS = "pruner_state.safetensors"
STRUCTURED = ("heads", "neurons")


@dataclass(frozen=True)
class _Resolved:
    """A modifier with its steps resolved and its selection made."""

    index: int
    config: ModifierConfig
    start: int
    end: int
    modules: tuple[str, ...] = ()                 # magnitude / nm: Linear module names
    layers: tuple[LayerLayout, ...] = ()          # heads / neurons: encoder layers

    def target(self, step: int, final: float | None = None) -> float:
        c = self.config
        final = c.final_sparsity if final is None else final
        return sparsity_at(step, schedule=c.schedule, initial=min(c.initial_sparsity, final), final=final,
                           start=self.start, end=self.end)

    def is_event(self, step: int) -> bool:
        return is_pruning_event(step, start=self.start, end=self.end, frequency=self.config.frequency)


def match_names(patterns: Iterable[str], names: list[str], where: str) -> set[str]:
    """Names matched by exact names or `re:` regexes (full match); a pattern matching none is an error."""
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern.startswith("re:"):
            rx = re.compile(pattern[3:])
            hits = {n for n in names if rx.fullmatch(n)}
        else:
            hits = {pattern} if pattern in names else set()
        if not hits:
            close = difflib.get_close_matches(pattern.removeprefix("re:"), names, n=3, cutoff=0.4)
            hint = f"close candidates: {', '.join(close)}" if close else f"e.g. {', '.join(names[:3])}"
            raise RecipeError(f"{where} pattern {pattern!r} matches no layer of the model",
                              f"use an exact module name or a 're:' regex ({hint})")
        chosen |= hits
    return chosen


class Pruner:
    def __init__(self, model: torch.nn.Module, modifiers: list[ModifierConfig], total_steps: int):
        self.model = model
        self.total_steps = max(1, int(total_steps))
        self._params = dict(model.named_parameters())
        self._layout = encoder_layout(model) if any(m.kind in STRUCTURED for m in modifiers) else []
        self.modifiers = self._resolve(modifiers)
        self.head_keep: dict[int, torch.Tensor] = {}
        self.neuron_keep: dict[int, torch.Tensor] = {}
        self.taylor: dict[str, torch.Tensor] = {}      # "heads/<layer>" | "neurons/<layer>" -> scores
        self.nm_masks: dict[str, torch.Tensor] = {}
        self.magnitude_masks: dict[str, torch.Tensor] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self._hooks: list = []

    # ---- selection ------------------------------------------------------------------------------

    def _resolve(self, modifiers: list[ModifierConfig]) -> list[_Resolved]:
        linear = [n for n, m in self.model.named_modules() if isinstance(m, torch.nn.Linear)]
        in_encoder = [n for n in linear if re.search(r"\.layer\.\d+\.", n)]
        out: list[_Resolved] = []
        owner: dict[str, str] = {}
        seen_kinds: set[str] = set()
        for i, mod in enumerate(modifiers):
            where = f"pruning.{i}"
            if mod.kind == "layers":
                if "layers" in seen_kinds:
                    raise RecipeError(f"{where} is a second 'layers' modifier", "keep one list of layers")
                seen_kinds.add("layers")
                self._check_depth(mod, where)
                continue
            start, end = resolve_step(mod.start, self.total_steps), resolve_step(mod.end, self.total_steps)
            if end > self.total_steps:
                raise RecipeError(f"{where}.end is step {end} but the run has only {self.total_steps} steps, so "
                                  f"final_sparsity would never be reached",
                                  f"set {where}.end <= {self.total_steps} or a fraction such as 0.7")
            if start > end:
                raise RecipeError(f"{where}.start resolves to step {start}, after end (step {end})",
                                  f"make start <= end; the run has {self.total_steps} steps")
            if mod.kind in STRUCTURED:
                if mod.kind in seen_kinds:
                    raise RecipeError(f"{where} is a second '{mod.kind}' modifier",
                                      f"merge the '{mod.kind}' modifiers into one")
                seen_kinds.add(mod.kind)
                prefixes = [layer.prefix for layer in self._layout]
                chosen = match_names(mod.params, prefixes, f"{where}.params") if mod.params else set(prefixes)
                chosen -= match_names(mod.ignore, prefixes, f"{where}.ignore") if mod.ignore else set()
                layers = tuple(layer for layer in self._layout if layer.prefix in chosen)
                out.append(_Resolved(i, mod, start, end, layers=layers))
                continue
            chosen = match_names(mod.params, linear, f"{where}.params") if mod.params else set(in_encoder)
            if mod.ignore:
                chosen -= match_names(mod.ignore, linear, f"{where}.ignore")
            if not chosen:
                raise RecipeError(f"{where} selects no layer", f"widen {where}.params or shorten its ignore list")
            for name in sorted(chosen):
                if name in owner and modifiers[int(owner[name])].kind == mod.kind:
                    raise RecipeError(f"layer {name} is selected by pruning.{owner[name]} and {where}",
                                      f"add it to one modifier's ignore list")
                owner[name] = str(i)
                if mod.kind == "nm" and self._params[f"{name}.weight"].shape[-1] % mod.m:
                    raise RecipeError(f"{where}: {name} has {self._params[f'{name}.weight'].shape[-1]} inputs, "
                                      f"not divisible by m={mod.m}", f"ignore {name} or choose another m")
            for pattern in mod.sparsity_overrides:
                match_names([pattern], sorted(chosen), f"{where}.sparsity_overrides")
            out.append(_Resolved(i, mod, start, end, modules=tuple(sorted(chosen))))
        return out

    def _check_depth(self, mod: ModifierConfig, where: str) -> None:
        """A `layers` modifier is structural surgery done before the Trainer exists (it changes which
        parameters the optimizer holds), so here it is only checked: the model must already be cut."""
        depth = len(encoder_layout(self.model))
        if depth != len(mod.keep):
            raise RecipeError(f"{where} keeps {len(mod.keep)} encoder layers but the model has {depth}",
                              "cut the model before training: edgeprune train does it for you; in your own "
                              "script call edgeprune.depth.keep_encoder_layers(model, keep) before building "
                              "the Trainer")

    # ---- pruning events ---------------------------------------------------------------------------

    def update(self, step: int) -> bool:
        """Recompute the masks of every modifier with an event at `step`; True if any changed."""
        self.step = step
        due = [r for r in self.modifiers if r.is_event(step)]
        if not due:
            return False
        for r in sorted(due, key=lambda r: ("heads", "neurons", "nm", "magnitude").index(r.config.kind)):
            if r.config.kind in STRUCTURED:
                self._update_structures(r, step)
            elif r.config.kind == "nm":
                for name in r.modules:
                    self.nm_masks[f"{name}.weight"] = M.nm_mask(self._params[f"{name}.weight"], r.config.n, r.config.m)
            else:
                self._update_magnitude(r, step)
        self._sync_from_rank0()
        self._combine()
        self.history.append({"step": step, "modifiers": [r.index for r in due],
                             "targets": {str(r.index): round(r.target(step), 6) for r in due},
                             "global_sparsity": round(self.report()["global"], 6)})
        return True

    def _update_structures(self, r: _Resolved, step: int) -> None:
        heads = r.config.kind == "heads"
        scores: dict[int, torch.Tensor] = {}
        for layer in r.layers:
            key = f"{r.config.kind}/{layer.index}"
            if r.config.score == "taylor" and key in self.taylor:
                scores[layer.index] = self.taylor[key]
            elif heads:
                p = self._params
                scores[layer.index] = M.head_scores_magnitude(p[f"{layer.q}.weight"], p[f"{layer.k}.weight"],
                                                              p[f"{layer.v}.weight"], p[f"{layer.o}.weight"],
                                                              layer.num_heads)
            else:
                scores[layer.index] = M.neuron_scores_magnitude(self._params[f"{layer.ffn_in}.weight"],
                                                                self._params[f"{layer.ffn_out}.weight"])
        keep = self.head_keep if heads else self.neuron_keep
        alive = {i: keep[i] for i in scores if i in keep} if keep else None
        if alive is not None and len(alive) != len(scores):
            alive = {i: keep.get(i, torch.ones_like(s, dtype=torch.bool)) for i, s in scores.items()}
        keep.update(M.select_structures(scores, r.target(step), r.config.scope, r.config.min_per_layer, alive))

    def _update_magnitude(self, r: _Resolved, step: int) -> None:
        self._combine(include_magnitude=False)
        params = [f"{m}.weight" for m in r.modules]
        weights = {p: self._params[p] for p in params}
        alive = {p: self.masks[p] for p in params if p in self.masks}
        overrides: dict[str, float] = {}
        for pattern, final in r.config.sparsity_overrides.items():
            for name in match_names([pattern], list(r.modules), f"pruning.{r.index}.sparsity_overrides"):
                overrides[f"{name}.weight"] = final
        rest = {p: w for p, w in weights.items() if p not in overrides}
        if overrides:
            local = {p: weights[p] for p in overrides}
            self.magnitude_masks.update(M.magnitude_masks_local(
                local, {p: r.target(step, final) for p, final in overrides.items()}, alive))
        if rest:
            target = r.target(step)
            if r.config.scope == "global":
                self.magnitude_masks.update(M.magnitude_masks_global(rest, target, alive))
            else:
                self.magnitude_masks.update(M.magnitude_masks_local(rest, target, alive))

    def _combine(self, include_magnitude: bool = True) -> None:
        """AND every component into one keep-mask per parameter (weights and, for structures, biases)."""
        combined: dict[str, torch.Tensor] = {}

        def and_into(name: str, mask: torch.Tensor) -> None:
            mask = mask.to(torch.bool).expand_as(self._params[name])
            combined[name] = combined[name] & mask if name in combined else mask.clone()

        by_index = {layer.index: layer for layer in self._layout}
        for i, keep in self.head_keep.items():
            layer = by_index[i]
            rows = M.head_row_mask(keep, layer.head_dim)
            for mod in layer.head_rows:
                and_into(f"{mod}.weight", rows[:, None])
                if f"{mod}.bias" in self._params:
                    and_into(f"{mod}.bias", rows)
            and_into(f"{layer.o}.weight", rows[None, :])
        for i, keep in self.neuron_keep.items():
            layer = by_index[i]
            and_into(f"{layer.ffn_in}.weight", keep[:, None])
            if f"{layer.ffn_in}.bias" in self._params:
                and_into(f"{layer.ffn_in}.bias", keep)
            and_into(f"{layer.ffn_out}.weight", keep[None, :])
        for name, mask in self.nm_masks.items():
            and_into(name, mask)
        if include_magnitude:
            for name, mask in self.magnitude_masks.items():
                and_into(name, mask)
        self.masks = combined

    # ---- keeping pruned weights at zero -----------------------------------------------------------

    @torch.no_grad()
    def apply(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero pruned weights, and their optimizer state so momentum cannot move them again."""
        for name, mask in self.masks.items():
            param = self._params[name]
            param.mul_(mask.to(param.dtype))
            if optimizer is not None:
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.mul_(mask.to(value.dtype))

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """For hand-written loops that call it between backward and step; the callback uses hooks."""
        for name, mask in self.masks.items():
            grad = self._params[name].grad
            if grad is not None:
                grad.mul_(mask.to(grad.dtype))

    def attach_gradient_masks(self) -> None:
        """Mask each gradient as backward produces it (before clipping and before DDP's all-reduce).

        Every parameter a modifier can touch gets a hook that reads the *current* mask, so masks
        recomputed at later events apply without re-registering.
        """
        self.detach_gradient_masks()
        for name in self._maskable():
            self._hooks.append(self._params[name].register_hook(
                lambda grad, name=name: grad * self.masks[name].to(grad.dtype) if name in self.masks else grad))

    def detach_gradient_masks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _maskable(self) -> list[str]:
        names: set[str] = set()
        for r in self.modifiers:
            if r.config.kind in STRUCTURED:
                for layer in r.layers:
                    mods = (*layer.head_rows, layer.o) if r.config.kind == "heads" else (layer.ffn_in, layer.ffn_out)
                    names |= {f"{m}.{p}" for m in mods for p in ("weight", "bias")}
            else:
                names |= {f"{m}.weight" for m in r.modules}
        return sorted(n for n in names if n in self._params and self._params[n].requires_grad)

    @torch.no_grad()
    def accumulate_taylor(self) -> None:
        """First-order Taylor importance (Molchanov et al. 2019): (sum of w * dL/dw over a structure)^2."""
        for r in self.modifiers:
            if r.config.kind not in STRUCTURED or r.config.score != "taylor" or self.step >= r.end:
                continue
            for layer in r.layers:
                key = f"{r.config.kind}/{layer.index}"
                score = self._structure_taylor(layer, r.config.kind == "heads")
                if score is not None:
                    self.taylor[key] = self.taylor.get(key, torch.zeros_like(score)) + score

    def _structure_taylor(self, layer: LayerLayout, heads: bool) -> torch.Tensor | None:
        p = self._params

        def wg(name: str) -> torch.Tensor | None:
            return None if p[name].grad is None else (p[name] * p[name].grad).float()

        if heads:
            parts = [wg(f"{m}.weight") for m in layer.head_rows] + [wg(f"{m}.bias") for m in layer.head_rows
                                                                  if f"{m}.bias" in p]
            o = wg(f"{layer.o}.weight")
            if any(t is None for t in parts) or o is None:
                return None
            total = sum(t.reshape(layer.num_heads, -1).sum(dim=1) for t in parts)
            total = total + o.reshape(o.shape[0], layer.num_heads, layer.head_dim).sum(dim=(0, 2))
        else:
            w_in, w_out = wg(f"{layer.ffn_in}.weight"), wg(f"{layer.ffn_out}.weight")
            if w_in is None or w_out is None:
                return None
            total = w_in.sum(dim=1) + w_out.sum(dim=0)
            if f"{layer.ffn_in}.bias" in p and p[f"{layer.ffn_in}.bias"].grad is not None:
                total = total + wg(f"{layer.ffn_in}.bias")
        return total.pow(2)

    # ---- distributed ------------------------------------------------------------------------------

    def _sync_from_rank0(self) -> None:
        """Rank 0's masks win everywhere, so ranks cannot drift apart on ties or float noise."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if torch.distributed.get_world_size() < 2:
            return
        for store in (self.head_keep, self.neuron_keep, self.nm_masks, self.magnitude_masks):
            for key in sorted(store):
                buf = store[key].to(torch.uint8).contiguous()
                torch.distributed.broadcast(buf, src=0)
                store[key] = buf.to(torch.bool)

    # ---- reporting and state ----------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Sparsity of each masked weight and over all encoder Linear weights plus masked ones."""
        per_layer = {name: 1.0 - float(mask.float().mean()) for name, mask in sorted(self.masks.items())
                     if name.endswith(".weight")}
        tracked = {f"{n}.weight" for n, m in self.model.named_modules()
                   if isinstance(m, torch.nn.Linear) and re.search(r"\.layer\.\d+\.", n)} | set(per_layer)
        total = sum(self._params[n].numel() for n in tracked)
        zeros = sum(int((~self.masks[n]).sum()) for n in per_layer)
        return {
            "global": zeros / total if total else 0.0,
            "per_layer": {k: round(v, 6) for k, v in per_layer.items()},
            "heads_pruned": {str(i): [int(j) for j in (~k).nonzero().flatten().tolist()]
                             for i, k in sorted(self.head_keep.items())},
            "neurons_pruned": {str(i): [int(j) for j in (~k).nonzero().flatten().tolist()]
                               for i, k in sorted(self.neuron_keep.items())},
            "nm": [{"n": r.config.n, "m": r.config.m, "params": [f"{m}.weight" for m in r.modules]}
                   for r in self.modifiers if r.config.kind == "nm"],
        }

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for prefix, store in (("heads", self.head_keep), ("neurons", self.neuron_keep),
                              ("nm", self.nm_masks), ("magnitude", self.magnitude_masks)):
            for key, value in store.items():
                tensors[f"{prefix}::{key}"] = value.to(torch.uint8).contiguous().cpu()
        for key, value in self.taylor.items():
            tensors[f"taylor::{key}"] = value.contiguous().cpu()
        save_file(tensors, str(folder / STATE_TENSORS))
        (folder / STATE_JSON).write_text(json.dumps({"step": self.step, "history": self.history}, indent=1))

    def load(self, folder: Path) -> None:
        from safetensors.torch import load_file

        folder = Path(folder)
        meta = json.loads((folder / STATE_JSON).read_text())
        self.step, self.history = int(meta["step"]), list(meta["history"])
        stores = {"heads": self.head_keep, "neurons": self.neuron_keep, "nm": self.nm_masks,
                  "magnitude": self.magnitude_masks, "taylor": self.taylor}
        for key, value in load_file(str(folder / STATE_TENSORS)).items():
            prefix, _, name = key.partition("::")
            target = int(name) if prefix in ("heads", "neurons") else name
            stores[prefix][target] = value if prefix == "taylor" else value.to(torch.bool)
        self._combine()

