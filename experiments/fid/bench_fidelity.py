"""Benchmark (b): lit_gen's FID vs torch-fidelity's on the same images with the same extractor weights.

Without internet there are no real Inception weights here, so both tools load the same randomly initialised
FID-InceptionV3 state dict (``lit_gen.testing.save_random_inception_weights``; torch-fidelity through its
``feature_extractor_weights_path``). The numbers are therefore not FID values, but the whole pipeline
(PNG decoding, uint8, TF1-compatible resize to 299, the InceptionV3 graph, float64 statistics, the eigenvalue
form of the matrix square root) is the one used with the real weights.

Inputs: ``--num`` real MNIST test images and ``--num`` stand-in generated images, written as greyscale PNGs.
Timings (end to end from the PNG folders, extractor construction included) alternate between the tools.

    python experiments/fid/bench_fidelity.py --num 64 --reps 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from common import fake_images, load_average, mnist_images
from torchvision.utils import save_image

from lit_gen.commands.evaluate import image_batches
from lit_gen.metrics import GenerativeMetrics, InceptionV3Features, compute_reference
from lit_gen.testing import save_random_inception_weights


def lit_gen_fid(real_dir: Path, fake_dir: Path, weights: Path, batch_size: int) -> float:
    extractor = InceptionV3Features(weights_path=str(weights), expected_sha256=None, download=False)
    batches, count = image_batches(real_dir, batch_size)
    reference = compute_reference(batches, extractor, count, ks=())
    metric = GenerativeMetrics(extractor, reference, metrics=["fd"])
    for images in image_batches(fake_dir, batch_size)[0]:
        metric.update(images)
    return float(metric.compute()[metric.names["fd"]])  # stand-in weights: fd_inception_<sha>, not fid


def fidelity_fid(real_dir: Path, fake_dir: Path, weights: Path, batch_size: int) -> float:
    import torch_fidelity

    metrics = torch_fidelity.calculate_metrics(
        input1=str(fake_dir),
        input2=str(real_dir),
        fid=True,
        cuda=False,
        cache=False,
        verbose=False,
        batch_size=batch_size,
        feature_extractor_weights_path=str(weights),
    )
    return float(metrics["frechet_inception_distance"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num", type=int, default=64, help="images per set")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--warmup", action="store_true", help="one untimed 4-image pass of each tool first")
    parser.add_argument("--out", type=str, default=str(Path(__file__).with_name("results_fidelity.json")))
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lit_gen_bench_fidelity_"))
    weights = save_random_inception_weights(tmp / "random-inception.pth", seed=0)
    real, fake = mnist_images()[: args.num], fake_images(args.num, seed=1)
    for name, images in (("real", real), ("fake", fake)):
        (tmp / name).mkdir()
        for i, image in enumerate(images):
            save_image(image, tmp / name / f"{i:05d}.png")
    torch.set_num_threads(torch.get_num_threads())
    tools = {"lit_gen": lit_gen_fid, "torch_fidelity": fidelity_fid}
    if args.warmup:  # first Inception forwards in a process pay one-time kernel set-up: keep them out
        for name, images in (("warm_real", real[:4]), ("warm_fake", fake[:4])):
            (tmp / name).mkdir()
            for i, image in enumerate(images):
                save_image(image, tmp / name / f"{i:05d}.png")
        for tool in tools.values():
            tool(tmp / "warm_real", tmp / "warm_fake", weights, args.batch_size)
    rows, loads = [], [load_average()]
    for rep in range(args.reps):
        order = list(tools) if rep % 2 == 0 else list(reversed(tools))
        row = {}
        for tool in order:
            start = time.perf_counter()
            row[f"{tool}_fid"] = tools[tool](tmp / "real", tmp / "fake", weights, args.batch_size)
            row[f"{tool}_s"] = time.perf_counter() - start
        row["rel_diff"] = abs(row["lit_gen_fid"] - row["torch_fidelity_fid"]) / abs(row["torch_fidelity_fid"])
        row["time_ratio"] = row["lit_gen_s"] / row["torch_fidelity_s"]
        rows.append(row)
        loads.append(load_average())
        print(json.dumps(row), flush=True)
    result = {"num_real": args.num, "num_fake": args.num, "batch_size": args.batch_size, "reps": rows,
              "warmup": args.warmup, "load_average": loads, "weights": "random FID-InceptionV3 (seed 0), not the real weights"}  # fmt: skip
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
