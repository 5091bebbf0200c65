"""Knowledge distillation from a dense teacher, as a Trainer that changes `compute_loss` only.

Pruning loses accuracy that a dense fine-tuned teacher can give back: the student matches the teacher's
softened distribution (KL at temperature T, scaled by T^2 so gradients keep their size) mixed by alpha with
the ordinary cross-entropy on the labels (Hinton et al. 2015). Optionally each layer's output is also
pulled towards the teacher's (mean squared error over real tokens, TinyBERT / CoFi): structured pruning
changes a layer's insides but not its hidden size, so the comparison needs no projection.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from transformers import Trainer

from .augment import AUGMENTED
from .errors import ModelError
from .soft_teacher import SOFT_TARGETS


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor | Sequence[torch.Tensor],
                      hard_loss: torch.Tensor, alpha: float, temperature: float,
                      weights: Sequence[float] | None = None) -> torch.Tensor:
    """`teacher_logits` is one teacher's logits, or several teachers' whose softened distributions are mixed
    (equally, or by `weights`)."""
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), ensemble_log_probs(teacher_logits, t, weights),
                    reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1.0 - alpha) * hard_loss


def labelled_loss(logits: torch.Tensor, labels: torch.Tensor, augmented: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the examples that still carry their label: a word-swapped sentence
    (edgeprune.augment) may no longer mean what its label says, so only the teacher speaks for it. A batch of
    rewritten sentences only has no hard loss (zero, still attached to the graph)."""
    keep = augmented.to(torch.bool).logical_not()
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], labels[keep])


def ensemble_log_probs(logits: torch.Tensor | Sequence[torch.Tensor], temperature: float,
                       weights: Sequence[float] | None = None) -> torch.Tensor:
    """log of the mean (or the `weights`-weighted mean) of the teachers' probabilities at `temperature`: their
    mixture, not their mean logit, so a teacher that is sure does not outvote two that are not by the size of
    its logits."""
    members = [logits] if isinstance(logits, torch.Tensor) else list(logits)
    if weights is not None and (len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0):
        raise ValueError(f"{len(members)} teachers need as many non-negative weights, got {list(weights)}")
    if len(members) == 1:  # exactly the one teacher's distribution, as before ensembles
        return F.log_softmax(members[0] / temperature, dim=-1)
    each = torch.stack([F.log_softmax(z / temperature, dim=-1) for z in members])
    weights = [1.0] * len(members) if weights is None else weights
    total = float(sum(weights))
    log_w = torch.tensor([math.log(w / total) if w > 0 else -math.inf for w in weights],
                         dtype=each.dtype, device=each.device).view(-1, *([1] * (each.dim() - 1)))
    return torch.logsumexp(each + log_w, dim=0)


def hidden_state_loss(student_hidden, teacher_hidden, attention_mask: torch.Tensor | None,
                      layer_map: Sequence[int] | None = None) -> torch.Tensor:
    """Mean over layers of the MSE between matched layer outputs, over non-padding tokens only.

    Index 0 (the embeddings) is skipped: pruning never touches it. `layer_map[i]` is the teacher layer
    that student layer i is matched to: a student cut from a model as deep as the teacher (`kind: layers`)
    passes the layers it kept, so each layer is held to the output of the layer it was copied from (the
    loss starts at zero only for a kept prefix: a later layer now reads an earlier one's output). Without
    a map, student layer i is matched to the teacher layer at the same relative depth."""
    s_layers, t_layers = list(student_hidden)[1:], list(teacher_hidden)[1:]
    if not s_layers:
        raise ModelError("hidden-state distillation needs the encoder's hidden states",
                         "set distillation.hidden_weight to 0 for this model")
    if layer_map is not None and (len(layer_map) != len(s_layers)
                                  or not all(0 <= j < len(t_layers) for j in layer_map)):
        raise ModelError(f"the layer map {list(layer_map)} does not pair {len(s_layers)} student layers with "
                         f"{len(t_layers)} teacher layers",
                         "list one teacher layer (0-based) per student layer")
    ratio = len(t_layers) / len(s_layers)
    mask = None if attention_mask is None else attention_mask.unsqueeze(-1).to(s_layers[0].dtype)
    # elements compared per layer: every real token's hidden vector
    count = None if mask is None else (mask.sum() * s_layers[0].shape[-1]).clamp_min(1.0)
    total = s_layers[0].new_zeros(())
    for i, s in enumerate(s_layers):
        t = t_layers[layer_map[i] if layer_map is not None else round((i + 1) * ratio) - 1]
        if s.shape != t.shape:
            raise ModelError(f"student layer {i} has hidden shape {tuple(s.shape)}, the teacher's "
                             f"{tuple(t.shape)}", "distil hidden states only between models of one hidden size")
        err = (s - t).pow(2)
        total = total + (err.mean() if mask is None else (err * mask).sum() / count)
    return total / len(s_layers)


def load_teacher(spec: str, student_config):
    """A fine-tuned classifier over the same labels, in the same order, and the same vocabulary."""
    from .models import check_fine_tuned, load_classifier

    teacher, _ = load_classifier(spec)
    config = teacher.config
    check_fine_tuned(config, spec, [student_config.id2label[i] for i in range(student_config.num_labels)],
                     "teacher", "the student",
                     "distill from a checkpoint written by `edgeprune train` or another fine-tuned classifier")
    if getattr(config, "vocab_size", None) != getattr(student_config, "vocab_size", None):
        raise ModelError(f"teacher {spec!r} has a vocabulary of {config.vocab_size}, the student "
                         f"{student_config.vocab_size}", "distill from a teacher with the student's tokenizer")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationTrainer(Trainer):
    """`teacher` may be None when every training example carries a soft teacher's cached logits
    (edgeprune.soft_teacher); those replace the teachers' logits in the soft target (`soft_weight` 1), or are
    mixed with the teacher's at `soft_weight` : 1 - `soft_weight`. The teacher, when there is one, still gives
    the hidden-state targets, and runs only when they or the mixture ask for it."""

    def __init__(self, *args, teacher, alpha: float = 0.5, temperature: float = 2.0, hidden_weight: float = 0.0,
                 layer_map: Sequence[int] | None = None, extra_teachers: Sequence = (), soft_weight: float = 1.0,
                 **kwargs):
        if soft_weight < 1.0 and teacher is None:
            raise ModelError(f"a soft-teacher weight of {soft_weight} mixes in a dense teacher, and there is none",
                             "set distillation.teacher, or distillation.soft_teacher.weight to 1")
        super().__init__(*args, **kwargs)
        self.soft_weight = soft_weight
        self.teacher = None if teacher is None else teacher.to(self.args.device)
        # the other ensemble members: their logits join the soft target; hidden states come from `teacher`
        self.extra_teachers = [t.to(self.args.device) for t in extra_teachers]
        self.alpha, self.temperature, self.hidden_weight = alpha, temperature, hidden_weight
        self.layer_map = None if layer_map is None else list(layer_map)

    def _set_signature_columns_if_needed(self) -> None:
        """Keep the augmentation mark through the Trainer's column filter (as TRL's trainers keep theirs):
        it is not a forward argument, and compute_loss pops it before the model sees the batch."""
        super()._set_signature_columns_if_needed()
        for column in (AUGMENTED, SOFT_TARGETS):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        augmented = inputs.pop(AUGMENTED, None)
        soft = inputs.pop(SOFT_TARGETS, None)
        hidden = self.hidden_weight > 0 and model.training and self.teacher is not None
        outputs = model(**inputs, output_hidden_states=hidden)
        features = {k: v for k, v in inputs.items() if k != "labels"}
        mixed = soft is not None and self.soft_weight < 1.0
        teacher_out, logits, weights = None, None, None
        with torch.no_grad():
            if self.teacher is not None and (soft is None or hidden or mixed):
                teacher_out = self.teacher(**features, output_hidden_states=hidden)
            if mixed:
                logits = [soft.to(outputs.logits.dtype), teacher_out.logits]
                weights = [self.soft_weight, 1.0 - self.soft_weight]
            elif soft is not None:
                logits = soft.to(outputs.logits.dtype)
            elif teacher_out is not None:
                logits = [teacher_out.logits] + [t(**features).logits for t in self.extra_teachers]
        hard = outputs.loss if augmented is None else labelled_loss(outputs.logits, inputs["labels"], augmented)
        if logits is None:  # evaluation of a student taught by soft targets alone: the eval split has none
            return (hard, outputs) if return_outputs else hard
        loss = distillation_loss(outputs.logits, logits, hard, self.alpha, self.temperature, weights)
        if hidden:
            loss = loss + self.hidden_weight * hidden_state_loss(outputs.hidden_states, teacher_out.hidden_states,
                                                                 inputs.get("attention_mask"), self.layer_map)
        return (loss, outputs) if return_outputs else loss
