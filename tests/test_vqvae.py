"""VQ-VAE: straight-through gradients, codebook/commitment losses, EMA codebook maths, dead-code restarts,
the code interface for priors, and the CIFAR-10 config end to end."""

from __future__ import annotations

import pytest
import torch

from lit_gen.losses import vq_codebook_loss, vq_commitment_loss
from lit_gen.models.vqvae import VQVAE
from lit_gen.nets.vqvae import VectorQuantizer, VQDecoder, VQEncoder, codebook_perplexity, ema_codebook_update


def small_vqvae(ema: bool = True, **quantizer) -> VQVAE:
    torch.manual_seed(0)
    quantizer = {"num_embeddings": 16, "embedding_dim": 4, "ema": ema, **quantizer}
    return VQVAE(
        VQEncoder(channels=3, hidden=8, res_hidden=4, embedding_dim=4),
        VQDecoder(channels=3, hidden=8, res_hidden=4, embedding_dim=4),
        VectorQuantizer(**quantizer),
        image_size=16,
        noise_seed=0,
    )


def test_quantizer_picks_the_nearest_code_and_passes_gradients_straight_through():
    q = VectorQuantizer(num_embeddings=3, embedding_dim=2, ema=False)
    q.codebook.data = torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]])
    z_e = torch.tensor([[0.9, 1.2], [-1.5, 0.2], [0.1, -0.1], [0.6, 0.6]]).t().reshape(1, 2, 2, 2)
    z_e.requires_grad_(True)
    z_st, indices, z_q = q(z_e)
    assert indices.flatten().tolist() == [1, 2, 0, 1]
    torch.testing.assert_close(z_st, z_q)  # same values ...
    weights = torch.randn_like(z_st)
    (z_st * weights).sum().backward()
    torch.testing.assert_close(z_e.grad, weights)  # ... and the gradient reaches z_e unchanged
    assert q.codebook.grad is None  # the straight-through path does not train the codebook


def test_vq_losses_train_the_right_side():
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    codebook = torch.randn(2, 4, 3, 3, requires_grad=True)
    vq_codebook_loss(z_e, codebook).backward()
    assert z_e.grad is None and codebook.grad is not None
    codebook.grad = None
    vq_commitment_loss(z_e, codebook).backward()
    assert codebook.grad is None and z_e.grad is not None
    torch.testing.assert_close(vq_commitment_loss(z_e, codebook), ((z_e - codebook) ** 2).mean())


def test_encoder_receives_gradients_from_the_reconstruction_loss():
    model = small_vqvae(ema=False, dead_code_threshold=None)
    x = torch.rand(2, 3, 16, 16) - 0.5
    out = model.losses(x)
    out["recon"].backward()
    grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert model.quantizer.codebook.grad is None  # only the codebook loss moves the codes
    model.zero_grad()
    model.losses(x)["loss"].backward()
    assert float(model.quantizer.codebook.grad.abs().sum()) > 0


def test_ema_codebook_update_maths():
    codebook = torch.tensor([[9.0, 9.0], [7.0, 7.0], [8.0, 8.0]])
    z = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    indices = torch.tensor([0, 0, 2])
    counts = torch.bincount(indices, minlength=3).float()
    sums = torch.zeros(3, 2).index_add_(0, indices, z)
    decay, eps = 0.9, 1e-5
    zero = torch.zeros(())
    # from zero statistics, the bias-corrected averages are the batch's: used codes become their means
    first = ema_codebook_update(
        codebook, torch.zeros(3), torch.zeros(3, 2), zero, counts, sums, decay, eps=0.0
    )
    new_codebook, new_size, new_sum, weight = first
    torch.testing.assert_close(weight, torch.tensor(0.1))
    torch.testing.assert_close(new_size, 0.1 * counts)
    torch.testing.assert_close(new_sum, 0.1 * sums)
    torch.testing.assert_close(new_codebook[0], torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(new_codebook[2], torch.tensor([5.0, 5.0]))
    assert torch.equal(new_codebook[1], codebook[1])  # never assigned: unchanged
    # a second step weighs the two batches 0.9 * 0.1 : 0.1, normalised by w = 1 - 0.9^2
    z2, indices2 = torch.tensor([[0.0, 4.0], [1.0, 1.0]]), torch.tensor([0, 1])
    counts2 = torch.bincount(indices2, minlength=3).float()
    sums2 = torch.zeros(3, 2).index_add_(0, indices2, z2)
    codebook2, size2, sum2, weight2 = ema_codebook_update(*first, counts2, sums2, decay, eps)
    torch.testing.assert_close(weight2, torch.tensor(0.19))
    torch.testing.assert_close(size2, 0.9 * 0.1 * counts + 0.1 * counts2)
    torch.testing.assert_close(sum2, 0.9 * 0.1 * sums + 0.1 * sums2)
    size, total = size2 / 0.19, float(size2.sum() / 0.19)
    smoothed = (size + eps) / (total + 3 * eps) * total  # Laplace smoothing of the corrected counts
    torch.testing.assert_close(codebook2, sum2 / 0.19 / smoothed.unsqueeze(1))
    torch.testing.assert_close(codebook2[0], (0.09 * sums[0] + 0.1 * z2[0]) / 0.28, rtol=1e-4, atol=0)
    torch.testing.assert_close(codebook2[1], z2[1], rtol=1e-4, atol=0)  # first assigned now: its vector
    # with decay 0 the code becomes the batch mean of its vectors whatever the statistics were
    batch_mean, *_ = ema_codebook_update(
        codebook, torch.ones(3), sums, torch.ones(()), counts, sums, 0.0, 0.0
    )
    torch.testing.assert_close(batch_mean[0], torch.tensor([2.0, 1.0]))


def vqvae_of(quantizer: VectorQuantizer) -> VQVAE:
    dim = quantizer.embedding_dim
    return VQVAE(
        VQEncoder(hidden=8, res_hidden=4, embedding_dim=dim),
        VQDecoder(hidden=8, res_hidden=4, embedding_dim=dim),
        quantizer,
        noise_seed=0,
    )


def test_first_ema_step_makes_used_codes_their_means_and_leaves_unused_codes_alone():
    torch.manual_seed(0)
    q = VectorQuantizer(512, 64, ema=True, decay=0.99, dead_code_threshold=None)  # no restarts
    model = vqvae_of(q)
    z_e = torch.randn(128, 64, 8, 8)
    indices = q(z_e)[1]
    before = q.codebook.clone()
    model.update_codebook(z_e, indices)
    counts = q.counts(indices)
    used = counts > 0
    assert 0 < int(used.sum()) < 512
    means = q.code_sums(q.flatten(z_e), indices.flatten())[used] / counts[used].unsqueeze(1)
    torch.testing.assert_close(q.codebook[used], means, rtol=1e-4, atol=1e-4)
    assert torch.equal(q.codebook[~used], before[~used])
    # so the codes keep the scale of the data (norm ~8) instead of growing without bound
    assert float(q.codebook.norm(dim=1).max()) < 2.0 * float(before.norm(dim=1).max())


def test_checkpoints_from_before_the_bias_corrected_ema_load():
    old = VectorQuantizer(8, 2, ema=True).state_dict()
    del old["ema_weight"]  # what an EMA quantizer saved before: its statistics were the corrected averages
    q = VectorQuantizer(8, 2, ema=True)
    q.load_state_dict(old)  # strict
    assert float(q.ema_weight) == 1.0 and torch.equal(q.codebook, old["codebook"])
    model = vqvae_of(VectorQuantizer(8, 2, ema=True))
    state = {k: v for k, v in model.state_dict().items() if k != "quantizer.ema_weight"}
    model.load_state_dict(state)
    assert float(model.quantizer.ema_weight) == 1.0


def test_ema_training_step_moves_codes_towards_their_vectors_and_restarts_dead_codes():
    model = small_vqvae(ema=True, dead_code_threshold=1.0)
    model.log_dict = model.log = lambda *a, **k: None
    q = model.quantizer
    x = torch.rand(4, 3, 16, 16)
    z_e = q.flatten(model.encoder(x - 0.5)).detach()
    counts = q.counts(q.nearest(z_e))
    means = q.code_sums(z_e, q.nearest(z_e)) / counts.clamp(min=1).unsqueeze(1)
    model.training_step((x, None), 0)
    # usage starts at 1: the codes this batch uses become their means, the others are restarted at its
    # encoder outputs
    used = counts > 0
    torch.testing.assert_close(q.codebook[used], means[used], rtol=1e-4, atol=1e-5)
    distances = torch.cdist(q.codebook[~used], z_e, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1)
    assert int((~used).sum()) > 0 and float(distances.values.max()) < 1e-5
    q.usage.fill_(5.0)
    q.usage[3] = 0.0  # one dead code
    before = q.codebook.clone()
    logs = model.update_codebook(model.encoder(x - 0.5).detach(), q(model.encoder(x - 0.5))[1])
    assert float(logs["train/dead_codes_restarted"]) == 1.0
    assert torch.cdist(q.codebook[3:4], z_e, compute_mode="donot_use_mm_for_euclid_dist").min() < 1e-5
    assert not torch.equal(q.codebook[3], before[3])
    assert float(q.usage[3]) == 1.0  # at the threshold: restarted again only if the next batch leaves it


@pytest.mark.parametrize("ema", [True, False])
def test_restarts_are_rare_once_codes_are_in_use(ema):
    """Encoder outputs on a 3-d subspace of the 64-d code space (real encoders' lie near a low-dimensional
    set): the first batch restarts the codes it does not use; from then on codes are in use and stay."""
    torch.manual_seed(0)
    q = VectorQuantizer(512, 64, ema=ema, decay=0.99, dead_code_threshold=1.0)
    model = vqvae_of(q)
    generator = torch.Generator().manual_seed(1)
    basis = torch.randn(3, 64, generator=generator)
    restarts, used = [], []

    def train(batches: int) -> None:
        for _ in range(batches):
            flat = (2.0 * torch.rand(128 * 64, 3, generator=generator) - 1.0) @ basis
            z_e = flat.reshape(128, 8, 8, 64).permute(0, 3, 1, 2)
            logs = model.update_codebook(z_e, q(z_e)[1])
            model.batches_seen += 1
            restarts.append(int(logs["train/dead_codes_restarted"]))
            used.append(float(logs["train/codebook_usage"]))

    train(20)
    assert restarts[0] > 256  # the first batch uses few of the random codes
    # (usage from 0 and never reset restarted ~500 codes per batch for ~8 batches)
    assert sum(restarts[1:]) < 512 // 10, restarts
    assert used[-1] > 0.9
    # codes that died long ago (usage ~0) are restarted once, not until their usage has climbed back
    q.usage[:100] = 0.0
    train(10)
    assert 100 <= restarts[20] and sum(restarts[21:]) < 512 // 10, restarts[20:]


def test_perplexity():
    assert float(codebook_perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0]))) == pytest.approx(4.0)
    assert float(codebook_perplexity(torch.tensor([0.0, 7.0, 0.0]))) == pytest.approx(1.0)


def test_code_interface_for_priors():
    model = small_vqvae()
    x = torch.rand(3, 3, 16, 16)
    indices = model.encode_indices(x)
    assert indices.shape == (3, 4, 4) and indices.dtype == torch.long
    assert model.latent_shape == (4, 4) and model.num_embeddings == 16
    images = model.decode_indices(indices)
    assert images.shape == x.shape and float(images.min()) >= 0 and float(images.max()) <= 1
    torch.testing.assert_close(images, model.reconstruct(x))
    assert model.generate(5, torch.Generator().manual_seed(0)).shape == (5, 3, 16, 16)


def test_vqvae_config_fits_tests_and_samples(cli, cifar10_dir, cifar10_skip_md5, tmp_path):
    from helpers.paths import CONFIGS
    from helpers.runs import run_dirs

    args = [
        "--config",
        CONFIGS / "vqvae_cifar10.yaml",
        "--trainer.logger=CSVLogger",  # the configs' W&B logger is tested elsewhere (its service is slow)
        f"--data.data_dir={cifar10_dir}",
        "--data.download=false",
        "--data.num_workers=0",
        "--data.batch_size=8",
    ]
    code, out, err = cli("fit", *args, "--trainer.fast_dev_run=true")
    assert code == 0, err[-2000:]
    code, out, err = cli(
        "fit",
        *args,
        "--trainer.max_steps=2",
        "--trainer.limit_val_batches=2",  # an int: 1 would mean 100%
        "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0",
    )
    assert code == 0, err[-2000:]
    run = run_dirs()[-1]
    header = next(run.rglob("metrics.csv")).read_text().splitlines()[0].split(",")
    assert {"train/perplexity", "train/codebook_usage", "train/commitment", "val/recon"} <= set(header)
    ckpt = run / "checkpoints" / "last.ckpt"
    code, out, err = cli("sample", "--ckpt_path", ckpt, "--num_samples", 8, "--out_dir", tmp_path / "s")
    assert code == 0, err[-2000:]
    samples = torch.load(tmp_path / "s" / "samples.pt")
    assert samples.shape == (8, 3, 32, 32)
    assert (tmp_path / "s" / "reconstructions.png").is_file()
