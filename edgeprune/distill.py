"""Knowledge distillation from a dense teacher, as a Trainer that changes `compute_loss` only.

Pruning loses accuracy that a dense fine-tuned teacher can give back: the student matches the teacher's
softened distribution (KL at temperature T, scaled by T^2 so gradients keep their size) mixed by alpha with
the ordinary cross-entropy on the labels (Hinton et al. 2015).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from .errors import ModelError


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, hard_loss: torch.Tensor,
                      alpha: float, temperature: float) -> torch.Tensor:
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)
    return alpha * soft + (1.0 - alpha) * hard_loss


def load_teacher(spec: str, num_labels: int):
    from .models import load_classifier

    teacher, _ = load_classifier(spec)
    if teacher.config.num_labels != num_labels:
        raise ModelError(f"teacher {spec!r} has {teacher.config.num_labels} labels, the student {num_labels}",
                         "distill from a teacher fine-tuned on the same labels")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class DistillationTrainer(Trainer):
    def __init__(self, *args, teacher, alpha: float = 0.5, temperature: float = 2.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        loss = distillation_loss(outputs.logits, teacher_logits, outputs.loss, self.alpha, self.temperature)
        return (loss, outputs) if return_outputs else loss
