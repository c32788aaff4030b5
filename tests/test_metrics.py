"""Sample-quality metrics: formulas against references, feature extractors, reference cache, DDP, callback."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.linalg
import torch
from lightning.pytorch import LightningDataModule, Trainer
from torch.utils.data import TensorDataset

from lit_gen.callbacks import SampleQuality
from lit_gen.data import Digits, PixelTokens
from lit_gen.errors import LitGenError
from lit_gen.metrics import (
    GenerativeMetrics,
    InceptionV3Features,
    ModuleFeatures,
    RandomConvFeatures,
    ReferenceStats,
    compute_reference,
    reference_from_datamodule,
)
from lit_gen.metrics.features import INCEPTION_WEIGHTS_ENV, INCEPTION_WEIGHTS_FILE
from lit_gen.metrics.functional import (
    density_coverage,
    frechet_distance,
    inception_score,
    kernel_distance,
    mean_cov,
    precision_recall,
)
from lit_gen.metrics.reference import key_hash, reference_key
from lit_gen.testing import save_random_inception_weights


def stats_of(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return mean_cov(x.sum(0), x.T @ x, len(x))


def reference_of(features: torch.Tensor) -> ReferenceStats:
    mean, cov = stats_of(features)
    return ReferenceStats(mean, cov, len(features), features.float())


# --- formulas ------------------------------------------------------------------------------------------------


def test_frechet_distance_matches_float64_scipy_sqrtm():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 48, generator=g, dtype=torch.float64)
    b = torch.randn(300, 48, generator=g, dtype=torch.float64) @ (
        0.3 * torch.randn(48, 48, generator=g).double()
    )
    b = b + 0.5
    (mu1, s1), (mu2, s2) = stats_of(a), stats_of(b)
    np_mu1, np_s1, np_mu2, np_s2 = (t.numpy() for t in (mu1, s1, mu2, s2))
    covmean = scipy.linalg.sqrtm(np_s1 @ np_s2).real
    expected = ((np_mu1 - np_mu2) ** 2).sum() + np.trace(np_s1 + np_s2 - 2 * covmean)
    value = float(frechet_distance(mu1, s1, mu2, s2))
    assert abs(value - expected) / expected <= 1e-6
    # mean/covariance from running sums equal numpy's
    np.testing.assert_allclose(np_s1, np.cov(a.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)


def test_distance_of_a_set_to_itself_is_zero_and_fewer_samples_than_dims_is_finite():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 32, generator=g)
    mu, cov = stats_of(x)
    assert float(frechet_distance(mu, cov, mu, cov)) < 1e-8 * float(cov.trace())
    # 20 samples in 64 dims: singular covariances
    metric = GenerativeMetrics(
        torch.nn.Identity(), reference_of(torch.randn(30, 64, generator=g)), metrics=["fd"]
    )
    metric.update_features(torch.randn(20, 64, generator=g))
    value = float(metric.compute()["fd_identity"])
    assert np.isfinite(value) and value > 0


def test_kid_is_unbiased_on_two_draws_of_one_gaussian():
    g = torch.Generator().manual_seed(2)
    same = []
    for seed in range(20):
        kid, _ = kernel_distance(
            torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g), 5, 200, seed=seed
        )
        same.append(float(kid))
    same = np.array(same)
    stderr = same.std(ddof=1) / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * stderr  # unbiased: centred on 0 (a biased estimator is > 0)
    shifted, _ = kernel_distance(
        torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g) + 0.5, 5, 200
    )
    assert float(shifted) > 20 * stderr


def test_kid_and_inception_score_match_torch_fidelity_on_the_same_features():
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    g = torch.Generator().manual_seed(5)
    # float32 values (what GenerativeMetrics stores) given to torch-fidelity as float64 (it computes in the
    # features' dtype): only the definitions can differ
    real = torch.randn(300, 32, generator=g).double()
    fake = (1.1 * torch.randn(250, 32, generator=g) + 0.1).double()
    for seed in (0, 7):
        expected = kid_features_to_metric(
            fake, real, kid_subsets=10, kid_subset_size=100, rng_seed=seed, verbose=False
        )
        kid, kid_std = kernel_distance(fake, real, subsets=10, subset_size=100, seed=seed)
        assert float(kid) == pytest.approx(expected["kernel_inception_distance_mean"], rel=1e-6)
        assert float(kid_std) == pytest.approx(expected["kernel_inception_distance_std"], rel=1e-6)
        # GenerativeMetrics passes the generated features first, as torch-fidelity's input1
        metric = GenerativeMetrics(
            torch.nn.Identity(), reference_of(real), metrics=["kd"], kid_subsets=10, kid_subset_size=100,
            seed=seed,
        )  # fmt: skip
        metric.update_features(fake)
        values = metric.compute()
        assert float(values["kd_identity"]) == pytest.approx(
            expected["kernel_inception_distance_mean"], rel=1e-6
        )
        assert float(values["kd_identity_std"]) == pytest.approx(
            expected["kernel_inception_distance_std"], rel=1e-6
        )
    # N = 21 in 10 splits: torch-fidelity's parts of 2 or 3 shuffled rows (torch.chunk would give 7 parts of 3)
    logits = 3.0 * torch.randn(21, 1008, generator=g, dtype=torch.float64)
    for seed in (0, 2020):
        expected = isc_features_to_metric(logits, splits=10, shuffle=True, rng_seed=seed)
        score, score_std = inception_score(logits, splits=10, seed=seed)
        assert float(score) == pytest.approx(expected["inception_score_mean"], rel=1e-6)
        assert float(score_std) == pytest.approx(expected["inception_score_std"], rel=1e-6)


def test_precision_recall_density_coverage_on_gaussians_with_known_overlap():
    g = torch.Generator().manual_seed(3)
    n, d = 1500, 8
    real = torch.randn(n, d, generator=g)
    same = torch.randn(n, d, generator=g)
    far = torch.randn(n, d, generator=g) + 50.0
    p_same, r_same = precision_recall(real, same, k=3)
    density, coverage = density_coverage(real, same, k=5)
    # Naeem et al. 2020: for identical distributions E[density] = 1 and E[coverage] ≈ 1 - 2^-k
    assert abs(float(density) - 1.0) < 0.1
    assert abs(float(coverage) - (1 - 0.5**5)) < 0.03
    assert float(p_same) > 0.6 and float(r_same) > 0.6
    # disjoint supports: nothing is precise, recalled, dense or covered
    assert [float(v) for v in (*precision_recall(real, far), *density_coverage(real, far))] == [0, 0, 0, 0]
    # half the fakes from the real distribution: precision halves, coverage barely moves
    half = torch.cat([same[: n // 2], far[: n // 2]])
    p_half, _ = precision_recall(real, half, k=3)
    assert abs(float(p_half) - 0.5 * float(p_same)) < 0.05
    # a collapsed generator (std 0.3): precise but low recall and coverage
    narrow = 0.3 * torch.randn(n, d, generator=g)
    p_narrow, r_narrow = precision_recall(real, narrow, k=3)
    _, c_narrow = density_coverage(real, narrow, k=5)
    assert float(p_narrow) > 0.95 and float(r_narrow) < 0.2 and float(c_narrow) < 0.5


def test_inception_score_limits():
    # identical predictions: p(y|x) = p(y), score 1; confident and balanced over C classes: score C
    assert float(inception_score(torch.zeros(100, 10), splits=5)[0]) == pytest.approx(1.0)
    confident = 50.0 * torch.eye(10).repeat(20, 1)
    mean, std = inception_score(confident, splits=1)
    assert float(mean) == pytest.approx(10.0, rel=1e-6) and float(std) < 1e-6


# --- feature extractors --------------------------------------------------------------------------------------


def test_inception_loads_offline_through_weights_path(tmp_path):
    path = save_random_inception_weights(tmp_path / INCEPTION_WEIGHTS_FILE, seed=0)
    extractor = InceptionV3Features(weights_path=str(path), expected_sha256=None, download=False)
    images = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    features, logits = extractor.extract(images)
    assert features.shape == (1, 2048) and logits.shape == (1, 1008)
    assert torch.isfinite(features).all() and features.std() > 0
    # greyscale == the same image repeated to RGB; [0,1] floats == their PNG (uint8) version
    rgb_uint8 = (images.expand(-1, 3, -1, -1) * 255).add(0.5).clamp(0, 255).to(torch.uint8)
    torch.testing.assert_close(extractor(rgb_uint8), features)
    # the sha256 is checked: the stand-in weights are not the real file
    with pytest.raises(LitGenError, match=r"sha256 .* expected 6726825d"):
        InceptionV3Features(weights_path=str(path), download=False)


def test_only_the_standard_inception_weights_give_the_literature_names(tmp_path, monkeypatch):
    import lit_gen.metrics.features as features_module
    from lit_gen.metrics.features import sha256_of_file
    from lit_gen.metrics.generative import metric_names

    path = save_random_inception_weights(tmp_path / INCEPTION_WEIGHTS_FILE, seed=0)
    digest = sha256_of_file(path)
    g = torch.Generator().manual_seed(6)
    real, fake, logits = (
        torch.randn(40, 2048, generator=g),
        torch.randn(30, 2048, generator=g),
        torch.randn(30, 1008, generator=g),
    )
    # unchecked (expected_sha256: null) or checked against another sha256: not the standard file
    for expected in (None, digest):
        extractor = InceptionV3Features(weights_path=str(path), expected_sha256=expected, download=False)
        assert not extractor.fid_compatible and extractor.name == f"inception_{digest[:8]}"
        metric = GenerativeMetrics(
            extractor, reference_of(real), metrics=["kd", "is"], kid_subsets=2, kid_subset_size=20
        )
        metric.update(features=fake, logits=logits)
        suffix = f"inception_{digest[:8]}"
        assert set(metric.compute()) == {
            f"kd_{suffix}",
            f"kd_{suffix}_std",
            f"is_{suffix}",
            f"is_{suffix}_std",
        }
        assert set(metric_names(extractor).values()).isdisjoint(
            {"fid", "kid", "kid_std", "is", "is_std", "precision"}
        )
    # the file whose sha256 is the standard one's (here by declaring it so): fid, kid, is
    monkeypatch.setattr(features_module, "INCEPTION_WEIGHTS_SHA256", digest)
    standard = InceptionV3Features(weights_path=str(path), expected_sha256=None, download=False)
    assert standard.fid_compatible and standard.name == "inception"
    assert {metric_names(standard)[k] for k in ("fd", "kd", "is")} == {"fid", "kid", "is"}


def test_missing_inception_weights_offline_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    with pytest.raises(LitGenError) as err:
        InceptionV3Features(download=False)
    message = str(err.value)
    assert "\n" not in message and INCEPTION_WEIGHTS_FILE in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message and INCEPTION_WEIGHTS_ENV in message
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(LitGenError, match="nowhere.pth' do not exist"):
        InceptionV3Features()


def test_random_features_are_fixed_by_the_seed_and_any_module_works():
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b, c = RandomConvFeatures(seed=0), RandomConvFeatures(seed=0), RandomConvFeatures(seed=1)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    torch.testing.assert_close(a(images), b(images))
    metric = GenerativeMetrics(a, metrics=["fd"])
    assert metric.names["fd"] == "fd_random" and "fid" not in " ".join(metric.names.values())
    module = ModuleFeatures(torch.nn.Conv2d(3, 5, 3), name="clf", channels=3, image_size=16)
    assert module(images[:, :1]).shape == (4, 5 * 14 * 14)


# --- reference statistics ------------------------------------------------------------------------------------


def test_reference_statistics_are_cached_and_recomputed_when_the_key_changes(tmp_path):
    data = Digits(image_size=8, val_fraction=0.1)
    kwargs = dict(cache_dir=tmp_path / "stats", max_features=100, batch_size=200)
    first, path, computed = reference_from_datamodule(
        data, "val", RandomConvFeatures(image_size=16), **kwargs
    )
    assert computed and path.is_file() and first.num_samples == 180 and first.features.shape == (100, 256)
    again, path_again, computed_again = reference_from_datamodule(
        data, "val", RandomConvFeatures(image_size=16), **kwargs
    )
    assert not computed_again and path_again == path
    torch.testing.assert_close(again.mean, first.mean)
    torch.testing.assert_close(again.nn_radii(5), first.nn_radii(5))
    other, other_path, computed_other = reference_from_datamodule(
        data, "val", RandomConvFeatures(image_size=16, seed=1), **kwargs
    )
    assert computed_other and other_path != path
    _, train_path, _ = reference_from_datamodule(data, "train", RandomConvFeatures(image_size=16), **kwargs)
    assert train_path != path
    # a pytorch-fid style file (mu, sigma only) loads, FID only
    np.savez(tmp_path / "fid_stats.npz", mu=first.mean.numpy(), sigma=first.cov.numpy())
    loaded = ReferenceStats.load(tmp_path / "fid_stats.npz")
    assert loaded.features is None and loaded.num_samples == -1
    with pytest.raises(LitGenError, match="does not exist"):
        ReferenceStats.load(tmp_path / "missing.npz")


def test_reference_cache_gives_the_requested_number_of_real_features(tmp_path):
    data, extractor = Digits(image_size=8, val_fraction=0.1), RandomConvFeatures(image_size=16, width=8)
    kwargs = dict(cache_dir=tmp_path / "stats", batch_size=200)
    small, small_path, _ = reference_from_datamodule(data, "val", extractor, max_features=100, **kwargs)
    large, large_path, computed = reference_from_datamodule(
        data, "val", extractor, max_features=150, **kwargs
    )
    assert small.features.shape[0] == 100 and large.features.shape[0] == 150
    assert computed and large_path != small_path
    # more than the split holds: all 180, one file for every such request
    _, all_path, _ = reference_from_datamodule(data, "val", extractor, max_features=1000, **kwargs)
    _, same_path, computed_again = reference_from_datamodule(
        data, "val", extractor, max_features=5000, **kwargs
    )
    assert same_path == all_path and not computed_again


class ImagesOnly(LightningDataModule):
    """A DataModule without hyper-parameters: only its images tell two instances apart."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        images = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        self.train_set = self.val_set = TensorDataset(images)


def test_reference_key_holds_every_input_that_changes_the_statistics():
    extractor = RandomConvFeatures(image_size=16, width=8)

    def key(data=None, split="val", extractor=extractor, num_samples=20, max_features=10):
        data = Digits(image_size=8) if data is None else data
        return key_hash(reference_key(data, split, extractor, num_samples, max_features))

    class OtherDigits(Digits):
        pass

    base = key()
    assert key() == base and key(Digits(image_size=8, batch_size=7, num_workers=1)) == base
    variants = {
        "dataset class": key(OtherDigits(image_size=8)),
        "dataset init args (and resolution)": key(Digits(image_size=12)),
        "dataset split seed": key(Digits(image_size=8, seed=1)),
        "wrapped dataset": key(PixelTokens(Digits(image_size=8))),
        "split": key(split="train"),
        "number of images": key(num_samples=19),
        "number of real features": key(max_features=11),
        "extractor weights": key(extractor=RandomConvFeatures(image_size=16, width=8, seed=1)),
        "extractor preprocessing": key(extractor=RandomConvFeatures(image_size=32, width=8)),
        "extractor class": key(extractor=ModuleFeatures(extractor.net, name="random")),
    }
    for name, value in variants.items():
        assert value != base, name
    # PixelTokens of different images, DataModules without hyper-parameters: their images tell them apart
    assert key(PixelTokens(Digits(image_size=8, seed=1))) != variants["wrapped dataset"]
    assert key(ImagesOnly(0)) != key(ImagesOnly(1))
    assert key(ImagesOnly(0)) == key(ImagesOnly(0))


def test_pixel_tokens_of_different_images_get_their_own_statistics(tmp_path):
    extractor = RandomConvFeatures(image_size=16, width=8)
    kwargs = dict(cache_dir=tmp_path / "stats", max_features=50, batch_size=200)
    first, first_path, _ = reference_from_datamodule(
        PixelTokens(Digits(image_size=8)), "val", extractor, **kwargs
    )
    other, other_path, computed = reference_from_datamodule(
        PixelTokens(Digits(image_size=8, seed=1)), "val", extractor, **kwargs
    )
    assert computed and other_path != first_path and not torch.equal(other.mean, first.mean)


def test_an_empty_reference_split_is_a_one_line_error():
    extractor = RandomConvFeatures(image_size=16, width=8)
    with pytest.raises(LitGenError, match="reference_split: the val set of Digits is empty"):
        reference_from_datamodule(Digits(image_size=8, val_fraction=0.0), "val", extractor, use_cache=False)


def test_one_feature_pass_serves_every_metric():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return x.flatten(1)[:, :6]

    g = torch.Generator().manual_seed(4)
    extractor = ModuleFeatures(Counting(), name="count")
    reference = compute_reference([torch.rand(50, 1, 4, 4, generator=g)], extractor, 50, ks=(3, 5))
    calls.clear()
    metric = GenerativeMetrics(extractor, reference, kid_subsets=3, kid_subset_size=20)
    metric.update(torch.rand(30, 1, 4, 4, generator=g))
    values = metric.compute()
    assert calls == [30]
    assert set(values) == {
        f"{m}_count" for m in ("fd", "kd", "precision", "recall", "density", "coverage")
    } | {"kd_count_std"}


# --- DDP -----------------------------------------------------------------------------------------------------

DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys, json, torch, torch.distributed as dist, torch.multiprocessing as mp
    from lit_gen.metrics import GenerativeMetrics, RandomConvFeatures, compute_reference

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.rand(64, 1, 16, 16, generator=g), torch.rand(40, 1, 16, 16, generator=g) * 0.8

    def metric():
        extractor = RandomConvFeatures(image_size=16, width=8)
        real, _ = data()
        return GenerativeMetrics(extractor, compute_reference([real], extractor, len(real)), kid_subsets=4,
                                 kid_subset_size=30)

    def worker(rank, out):
        torch.set_num_threads(1)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1])
        dist.init_process_group("gloo", rank=rank, world_size=2)
        m = metric()
        _, fake = data()
        m.update(fake[rank * 20:(rank + 1) * 20])
        values = {k: float(v) for k, v in m.compute().items()}
        values["num_fake"] = m.sample_counts()["num_fake"]
        torch.save(values, f"{out}/rank{rank}.pt")
        dist.destroy_process_group()

    if __name__ == "__main__":
        out = sys.argv[2]
        # fork: the workers reuse this interpreter's imports (spawn would import torch twice more)
        mp.start_processes(worker, args=(out,), nprocs=2, start_method="fork")
        single = metric()
        single.update(data()[1])
        values = {k: float(v) for k, v in single.compute().items()}
        values["num_fake"] = single.sample_counts()["num_fake"]
        print(json.dumps({"single": values, "ranks": [torch.load(f"{out}/rank{r}.pt") for r in range(2)]}))
    """
)


@pytest.mark.ddp
def test_two_gloo_processes_give_the_same_metrics_as_one(tmp_path):
    import json
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "ddp_metrics.py"
    script.write_text(DDP_SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script), str(port), str(tmp_path)], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    single = report["single"]
    assert single["num_fake"] == 40
    for values in report["ranks"]:
        assert values["num_fake"] == 40
        for name, value in single.items():
            assert values[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name


# --- in-training callback ------------------------------------------------------------------------------------


def tiny_gan():
    from lit_gen.models import GAN
    from lit_gen.nets import DCGANDiscriminator, DCGANGenerator

    return GAN(
        generator=DCGANGenerator(latent_dim=8, channels=1, image_size=32, width=8),
        discriminator=DCGANDiscriminator(channels=1, image_size=32, width=8),
    )


def test_callback_logs_metrics_and_keeps_metric_networks_out_of_checkpoints(tmp_path):
    def run(callbacks):
        torch.manual_seed(0)
        model = tiny_gan()
        trainer = Trainer(
            accelerator="cpu",
            max_steps=4,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path / f"run{len(callbacks)}",
            callbacks=callbacks,
        )
        trainer.fit(model, datamodule=Digits(image_size=32, batch_size=16))
        path = tmp_path / f"model{len(callbacks)}.ckpt"
        trainer.save_checkpoint(path)
        return trainer, path

    quality = SampleQuality(
        extractor=RandomConvFeatures(image_size=16, width=8),
        every_n_batches=1,
        num_samples=40,
        batch_size=20,
        reference_split="val",
        metrics=["fd", "pr"],
        cache_dir=str(tmp_path / "stats"),
    )
    _, plain = run([])
    trainer, with_metrics = run([quality])
    assert set(quality.last) == {"val/fd_random", "val/precision_random", "val/recall_random"}
    assert float(trainer.callback_metrics["val/fd_random"]) == quality.last["val/fd_random"]
    records = (tmp_path / "run1" / "eval" / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 2  # batches 1 and 2 (the end of fit is batch 2: not evaluated twice)
    import json

    record = json.loads(records[-1])
    assert record["num_fake"] == 40 and record["num_real"] == 180 and record["extractor"]["name"] == "random"
    size_plain, size_metrics = plain.stat().st_size, with_metrics.stat().st_size
    assert abs(size_metrics - size_plain) < 2048, (size_plain, size_metrics)
    state = torch.load(with_metrics, weights_only=False)["state_dict"]  # our own file; hparams hold classes
    assert not any("extractor" in key or "inception" in key for key in state)
