"""Which vector the classification head reads: the [CLS] token (Hugging Face's BERT head) or the mean of
the sentence's tokens.

The embedded MiniLM (all-MiniLM-L6-v2) was trained as a sentence encoder whose output is the masked mean
of its last layer; its [CLS] vector was never trained to summarise a sentence. `training.pooling: mean`
gives the classifier the summary the encoder was built to produce. The pooler's dense + tanh and the
classifier stay as they are (same parameters, same state dict, every weight used so DDP needs no
`find_unused_parameters`); only their input changes, so the exported graph gains a masked mean
(Mul, ReduceSum, Div) after the last layer and nothing else.

A checkpoint records its pooling in `config.json` (`edgeprune_pooling`), and edgeprune's loaders
(`edgeprune.models.classifier_class`) build the matching class. A loader that ignores the field
(`AutoModelForSequenceClassification` on its own) would read [CLS] and get wrong logits: the ONNX bundle
carries the pooling in its graph, so the kiosk never depends on this.
"""

from __future__ import annotations

import functools

POOLINGS = ("cls", "mean")
CONFIG_KEY = "edgeprune_pooling"


def config_pooling(config) -> str:
    return getattr(config, CONFIG_KEY, None) or "cls"


def masked_mean(hidden, attention_mask):
    """Mean over the real tokens of each sentence: padding contributes nothing, so a padded batch
    scores every sentence exactly as it scores alone."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


@functools.cache  # one class per process: transformers keys its registries and checks on the class
def _mean_pooling_bert_class():
    import torch
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPoolingBertForSequenceClassification(BertForSequenceClassification):
        """BERT's sequence classifier reading the masked mean of the last layer instead of [CLS]."""

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, labels=None, **kwargs):
            kwargs.pop("return_dict", None)
            outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True,
                                **kwargs)
            pooler = self.bert.pooler
            pooled = pooler.activation(pooler.dense(masked_mean(outputs.last_hidden_state, attention_mask)))
            logits = self.classifier(self.dropout(pooled))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
            return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                            attentions=outputs.attentions)

    return MeanPoolingBertForSequenceClassification


def mean_pooling_class(config):
    """The mean-pooling classifier class for `config`'s family, or a one-line ModelError."""
    from .errors import ModelError

    if getattr(config, "model_type", None) != "bert":
        raise ModelError(f"training.pooling: mean supports BERT-style models; this one is "
                         f"{getattr(config, 'model_type', '?')!r}",
                         "use training.pooling: cls for this model, or a BERT-family model")
    if getattr(config, "num_labels", 2) < 2 or getattr(config, "problem_type", None) not in (
            None, "single_label_classification"):
        raise ModelError("training.pooling: mean is built for single-label classification",
                         "use training.pooling: cls for regression or multi-label heads")
    return _mean_pooling_bert_class()
