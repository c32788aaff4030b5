"""The autoregressive family: the GPT network, text and pixel tokens, training, checkpoints and sampling."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from helpers.paths import CONFIGS, ROOT, SHAKESPEARE_EXCERPT
from helpers.runs import run_dirs
from lightning.pytorch import Callback
from torch import Tensor

from lit_gen.data.pixels import PixelVocabulary, quantize
from lit_gen.data.text import ByteVocabulary, CharVocabulary, RandomWindowBatches, Text, Vocabulary
from lit_gen.models import Autoregressive
from lit_gen.nets import GPT
from lit_gen.optim import WarmupCosineLR

GPT_CONFIGS = sorted(CONFIGS.glob("gpt_*.yaml"))
EXPERIMENTS = ROOT / "experiments"

#: a text the tiny model memorises: one line repeated, so every window predicts the next character exactly
LINE = "First Citizen: Before we proceed any further, hear me speak.\n"


def tiny_gpt(**kwargs) -> GPT:
    options = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    return GPT(**{**options, **kwargs})


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def tiny_text_args(path: Path, text: str, steps: int) -> list[str]:
    """CLI overrides: the CPU quickstart config shrunk to a 2-layer, 64-wide model on ``path``."""
    net = "--model.init_args.network.init_args."
    return [
        *("--config", CONFIGS / "gpt_shakespeare_char_cpu.yaml", "--data.init_args.path", path),
        *(f"{net}vocab_size", len(set(text)), f"{net}n_layer", 2, f"{net}n_embd", 64, f"{net}n_head", 2),
        *(f"{net}block_size", 32, "--data.init_args.block_size", 32, "--data.init_args.batch_size", 16),
        *("--model.init_args.optimizer.init_args.lr", 0.005),
        *("--model.init_args.lr_scheduler.init_args.warmup_steps", 10),
        *("--model.init_args.lr_scheduler.init_args.decay_steps", steps),
        *("--trainer.max_steps", steps, "--trainer.val_check_interval", steps),
        *("--trainer.limit_val_batches", 2, "--trainer.enable_progress_bar", "false"),
    ]


# --- network ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{}, {"rotary": True, "qk_norm": True, "rms_norm": True}], ids=["gpt2", "rope"]
)
def test_changing_a_later_token_never_changes_earlier_logits(options):
    torch.manual_seed(0)
    net = tiny_gpt(**options).eval()
    idx = torch.randint(0, 11, (3, 16))
    logits = net(idx)
    for t in (0, 5, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 11
        other = net(changed)
        torch.testing.assert_close(other[:, :t], logits[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(other[:, t:], logits[:, t:])


def test_rotary_scores_depend_on_relative_positions_only():
    from lit_gen.nets.transformer import apply_rotary, rotary_tables

    torch.manual_seed(0)
    cos, sin = rotary_tables(16, 8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> Tensor:  # query at position m, key at position n
        return (
            apply_rotary(q, cos[m : m + 1], sin[m : m + 1]) * apply_rotary(k, cos[n : n + 1], sin[n : n + 1])
        ).sum()

    assert torch.allclose(score(5, 2), score(12, 9), atol=1e-5) and torch.allclose(score(3, 3), (q * k).sum())
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)
    # a rotation: norms are kept
    assert torch.allclose(apply_rotary(q, cos[7:8], sin[7:8]).norm(), q.norm())


@pytest.mark.parametrize("rotary", [False, True], ids=["learned", "rope"])
def test_cached_generation_equals_full_recomputation(rotary):
    """Greedy decoding with the key/value cache (and past the context, cropped) matches argmax of full passes."""
    torch.manual_seed(1)
    net = tiny_gpt(rotary=rotary, qk_norm=rotary).eval()
    prompt = torch.randint(0, 11, (2, 3))
    generated = torch.cat(list(net.generate(prompt, 30, temperature=0.0)), dim=1)
    seq = prompt
    with torch.no_grad():
        for _ in range(30):
            nxt = net(seq[:, -16:])[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat((seq, nxt), dim=1)
    assert torch.equal(generated, seq[:, 3:])


def test_weight_tying_and_parameter_groups():
    net = tiny_gpt()
    assert net.lm_head.weight is net.wte.weight
    model = Autoregressive(net, optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1))
    optimizer = model.configure_optimizers()
    matrices, embeddings, vectors = optimizer.param_groups
    assert [g["name"] for g in optimizer.param_groups] == ["matrices", "embeddings", "vectors"]
    assert matrices["weight_decay"] == embeddings["weight_decay"] == 0.1 and vectors["weight_decay"] == 0.0
    assert embeddings["params"] == [net.wte.weight, net.wpe.weight]  # the tied head is the token embedding
    assert all(p.dim() == 2 for p in matrices["params"]) and all(p.dim() < 2 for p in vectors["params"])
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in net.parameters()
    )


def test_loss_at_initialisation_is_log_vocab_size():
    torch.manual_seed(0)
    model = Autoregressive(GPT(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0))
    x = torch.randint(0, 65, (8, 64))
    loss = model.loss((x, torch.randint(0, 65, (8, 64))))
    assert abs(loss.item() - math.log(65)) < 0.05


def _nanogpt_reference():
    spec = importlib.util.spec_from_file_location(
        "nanogpt_reference", EXPERIMENTS / "nanogpt" / "reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_warmup_cosine_matches_nanogpt_get_lr():
    get_lr = _nanogpt_reference().get_lr  # nanoGPT's schedule, as the benchmark's reference loop runs it

    def nanogpt_lr(it):
        return get_lr(it, lr=1e-3, warmup=100, decay_iters=2000, min_lr=1e-4)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    scheduler = WarmupCosineLR(optimizer, warmup_steps=100, decay_steps=2000, min_lr=1e-4)
    for step in range(2100):
        if step in (0, 1, 99, 100, 101, 1000, 1999, 2000, 2001, 2099):
            assert optimizer.param_groups[0]["lr"] == pytest.approx(nanogpt_lr(step), rel=1e-9, abs=1e-12)
        optimizer.step()
        scheduler.step()


def test_lightning_training_equals_nanogpts_plain_loop_on_the_same_batches(tmp_path):
    """The Autoregressive module under Lightning (AdamW groups, per-step schedule, clipping) makes the same
    updates as nanoGPT's loop (experiments/nanogpt/reference.py's schedule) given the same initial weights and
    batches: what is left between the two in the benchmark is which random windows each draws."""
    reference = _nanogpt_reference()
    text = "".join(f"{i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))
    datamodule = Text(str(write_text(tmp_path / "t.txt", text)), block_size=16, batch_size=4)
    datamodule.setup()
    torch.manual_seed(0)
    net = tiny_gpt(vocab_size=datamodule.vocab_size)
    plain = copy.deepcopy(net)
    adamw = functools.partial(torch.optim.AdamW, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    schedule = functools.partial(WarmupCosineLR, warmup_steps=3, decay_steps=12, min_lr=1e-3)
    model = Autoregressive(net, optimizer=adamw, lr_scheduler=schedule)
    trainer = L.Trainer(
        max_steps=12,
        gradient_clip_val=1.0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule)

    params = list(plain.parameters())
    optimizer = adamw(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    )
    batches = RandomWindowBatches(datamodule.train_tokens, 16, 4, datamodule.seed)
    for it in range(12):
        for group in optimizer.param_groups:
            group["lr"] = reference.get_lr(it, 1e-2, 3, 12, 1e-3)
        x, y = batches.batch(it)
        torch.nn.functional.cross_entropy(plain(x).flatten(0, 1), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    for (name, p), q in zip(net.named_parameters(), plain.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name
    torch.manual_seed(0)
    assert not torch.allclose(
        plain.wte.weight, tiny_gpt(vocab_size=datamodule.vocab_size).wte.weight
    )  # it trained


def test_each_ddp_rank_draws_its_own_dropout_masks():
    """``seed_everything`` seeds every rank alike; the model gives each rank its own stream at the start of
    ``fit`` (tests/test_ddp.py checks it in a real 2-process run) and leaves rank 0 the single process's."""
    idx = torch.randint(11, (4, 16), generator=torch.Generator().manual_seed(0))
    outputs = {}
    for rank in (None, 0, 1, 2):
        torch.manual_seed(0)
        model = Autoregressive(tiny_gpt(dropout=0.5))
        if rank is not None:
            model.trainer = SimpleNamespace(global_rank=rank)
            model.on_fit_start()
        outputs[rank] = model.network.train()(idx)
    assert torch.equal(outputs[0], outputs[None])
    assert not torch.equal(outputs[1], outputs[0]) and not torch.equal(outputs[2], outputs[1])
    assert not torch.equal(outputs[2], outputs[0])


class PoisonWeights(Callback):
    """Makes every logit NaN from training batch ``batch`` on."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            with torch.no_grad():
                pl_module.network.ln_f.weight.fill_(float("nan"))


def test_a_non_finite_loss_on_a_batch_that_does_not_log_stops_the_fit(cli, tmp_path):
    text = LINE * 20
    path = write_text(tmp_path / "tiny.txt", text)
    poison = "[{class_path: test_gpt.PoisonWeights, init_args: {batch: 4}}]"
    args = tiny_text_args(path, text, steps=20)
    code, _, err = cli("fit", *args, "--trainer.log_every_n_steps", 50, "--trainer.callbacks", poison)
    lines = [line for line in err.strip().splitlines() if line.startswith("lit_gen: error:")]
    assert code != 0 and len(lines) == 1, err
    assert "non-finite training loss at batch 4" in lines[0] and "train/loss" in lines[0]


def test_nanogpt_reference_script_reports_its_run(tmp_path):
    text = "".join(f"{i}: the quick brown fox jumps over the lazy dog.\n" for i in range(500))
    path = write_text(tmp_path / "t.txt", text)
    script = EXPERIMENTS / "nanogpt" / "reference.py"
    done = subprocess.run(
        [sys.executable, str(script), "--data", str(path), "--max_iters", "3", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["val_curve"][0][0] == 0 and result["val_curve"][-1][0] == 3
    assert 0 < result["val_loss_full"] < math.log(len(set(text))) + 0.5 and result["wall_s"] > 0


# --- data ------------------------------------------------------------------------------------------------


def test_text_split_vocabulary_and_reproducible_windows(tmp_path):
    text = "".join(chr(97 + (i * 7) % 26) for i in range(1000)) + "\n"
    datamodule = Text(str(write_text(tmp_path / "t.txt", text)), block_size=8, batch_size=4, seed=3)
    datamodule.setup()
    assert datamodule.vocabulary.chars == "".join(sorted(set(text)))
    assert datamodule.train_tokens.dtype == np.uint8 and len(datamodule.train_tokens) == 900
    assert datamodule.vocabulary.decode(datamodule.val_tokens) == text[900:]
    a, b = (
        RandomWindowBatches(datamodule.train_tokens, 8, 4, seed=3),
        RandomWindowBatches(datamodule.train_tokens, 8, 4, seed=3),
    )
    first = [x for x, _ in zip(a, range(3))]
    b.load_state_dict({"batch_index": 2})  # a resumed stream continues where the checkpoint says
    assert torch.equal(next(iter(b))[0], first[2][0])
    x, y = first[0]
    assert x.shape == (4, 8) and torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(first[0][0], first[1][0])


def test_vocabularies_round_trip_through_plain_configs():
    for vocabulary in (CharVocabulary("\n !abcé"), ByteVocabulary(), PixelVocabulary(16, (1, 4, 4))):
        config = vocabulary.to_config()
        restored = Vocabulary.from_config(torch.load(_saved(config), weights_only=True))
        assert type(restored) is type(vocabulary) and restored.init_args() == vocabulary.init_args()
    chars = CharVocabulary("\n !abcé")
    assert chars.decode(chars.encode("abc é!\n")) == "abc é!\n"
    assert ByteVocabulary().decode(ByteVocabulary().encode("façade")) == "façade"


def test_checkpoints_without_a_batch_count_load_with_the_fit_loops_count():
    """Autoregressive checkpoints written before every family counted its batches hold no ``batches_seen``."""
    trained = Autoregressive(tiny_gpt())
    trained.vocabulary = CharVocabulary("\n !abcdefg")
    checkpoint = {"state_dict": trained.state_dict(), "hyper_parameters": {}}
    trained.on_save_checkpoint(checkpoint)
    del checkpoint["state_dict"]["batches_seen"]
    checkpoint["loops"] = {"fit_loop": {"epoch_loop.batch_progress": {"total": {"processed": 7}}}}
    model = Autoregressive(tiny_gpt())
    model.on_load_checkpoint(checkpoint)
    model.load_state_dict(checkpoint["state_dict"])
    assert int(model.batches_seen) == 7 and model.vocabulary.init_args() == trained.vocabulary.init_args()


def _saved(obj) -> Path:
    path = Path("obj.pt")
    torch.save(obj, path)
    return path


def test_pixel_tokens_round_trip_within_half_a_level():
    images = torch.rand(5, 1, 4, 4)
    vocabulary = PixelVocabulary(16, (1, 4, 4))
    x, y = vocabulary.encode_images(images)
    assert x.shape == y.shape == (5, 16) and (x[:, 0] == 16).all() and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y, quantize(images, 16))
    assert (vocabulary.decode_images(y) - images).abs().max() <= 0.5 / 15 + 1e-6


# --- end to end ------------------------------------------------------------------------------------------


def test_tiny_text_is_memorised_and_sampled_from_the_checkpoint_alone(cli, tmp_path):
    text = LINE * 60
    path = write_text(tmp_path / "tiny.txt", text)
    code, _, err = cli("fit", *tiny_text_args(path, text, steps=200))
    assert code == 0, err
    (run,) = run_dirs()
    metrics = (run / "csv" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    for key in ("train/loss", "train/bits_per_token", "train/perplexity", "train/tokens_per_sec", "val/loss"):
        assert key in header
    val = [row.split(",")[header.index("val/loss")] for row in metrics[1:]]
    assert float([v for v in val if v][-1]) < 0.05
    # training metrics are computed and logged only where the loggers write: every log_every_n_steps (10)
    rows = [dict(zip(header, row.split(","))) for row in metrics[1:]]
    assert [int(r["step"]) for r in rows if r["train/loss"]] == list(range(9, 200, 10))
    assert [int(r["step"]) for r in rows if r["train/tokens_per_sec"]] == list(range(9, 200, 10))
    path.unlink()  # the vocabulary comes from the checkpoint
    ckpt = run / "checkpoints" / "last.ckpt"
    args = ("sample", "--ckpt_path", ckpt, "--prompt", "First Citizen:", "--max_new_tokens", 80)
    code, out, err = cli(*args, "--temperature", 0, "--num_samples", 1)
    assert code == 0, err
    assert out.startswith((LINE * 3)[:94])
    # seeded sampling at temperature 1 is reproducible, and another seed gives another text
    sampled = [cli(*args, "--temperature", 1.5, "--num_samples", 2, "--seed", s)[1] for s in (0, 0, 1)]
    assert sampled[0] == sampled[1] != sampled[2]
    assert (run / "samples" / "last" / "samples.txt").read_text(encoding="utf-8") == sampled[2]


def test_vocab_size_mismatch_is_a_one_line_error(cli, tmp_path):
    text = LINE * 10
    path = write_text(tmp_path / "tiny.txt", text)
    args = tiny_text_args(path, text, steps=2)
    args[args.index("--model.init_args.network.init_args.vocab_size") + 1] = 65
    code, _, err = cli("fit", *args)
    assert code == 2
    line = err.strip().splitlines()[-1]
    assert (
        line.startswith("lit_gen: error: model.network.init_args.vocab_size is 65")
        and f"{len(set(text))}" in line
    )
    code, _, err = cli("fit", *tiny_text_args(tmp_path / "missing.txt", text, steps=2))
    assert code == 2 and "data.path: " in err.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("config", GPT_CONFIGS, ids=lambda p: p.name)
def test_every_gpt_config_trains_a_step_and_samples(cli, config):
    args = ["fit", "--config", config, "--trainer.max_steps", 1, "--trainer.val_check_interval", 1]
    args += ["--trainer.limit_val_batches", 1, "--trainer.enable_progress_bar", "false"]
    if "shakespeare" in config.name:
        args += ["--data.init_args.path", SHAKESPEARE_EXCERPT]
        args += ["--data.init_args.batch_size", 2]
    code, _, err = cli(*args)
    assert code == 0, err
    (run,) = run_dirs()
    ckpt = run / "checkpoints" / "last.ckpt"
    if "pixels" in config.name:
        code, out, err = cli("sample", "--ckpt_path", ckpt, "--num_samples", 4)
        assert code == 0, err
        samples = torch.load(run / "samples" / "last" / "samples.pt")
        assert samples.shape == (4, 1, 16, 16) and 0.0 <= samples.min() and samples.max() <= 1.0
        assert (run / "samples" / "last" / "grid.png").is_file()
    else:
        code, out, err = cli("sample", "--ckpt_path", ckpt, "--num_samples", 1, "--max_new_tokens", 20)
        assert code == 0, err
        assert len(out.split("\n---------------\n")[0]) == 20


def test_pixel_model_generates_images_in_the_unit_interval():
    vocabulary = PixelVocabulary(4, (1, 3, 3))
    model = Autoregressive(tiny_gpt(vocab_size=5, block_size=9))
    model.vocabulary = vocabulary
    images = model.generate(6, rng=torch.Generator().manual_seed(0))
    again = model.generate(6, rng=torch.Generator().manual_seed(0))
    assert images.shape == (6, 1, 3, 3) and torch.equal(images, again)
    assert torch.allclose(images * 3, (images * 3).round()) and images.min() >= 0 and images.max() <= 1
