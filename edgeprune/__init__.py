"""edgeprune: prune during fine-tuning, convert to a verified ONNX bundle, gate it on a device budget.

Nothing heavy is imported here: the kiosk runtime (`edgeprune.runtime`) must load without torch,
and `edgeprune --help` must be instant.
"""

__version__ = "0.1.0"
