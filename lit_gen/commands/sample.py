"""``python -m lit_gen sample``: load a checkpoint and write N samples (see ``lit_gen.sampling`` for files)."""

from __future__ import annotations

import inspect
import shutil
import sys
from pathlib import Path
from typing import TextIO

import torch
from jsonargparse import ArgumentParser

from lit_gen.checkpoints import load_datamodule, load_model
from lit_gen.diffusion import Sampler
from lit_gen.errors import LitGenError
from lit_gen.sampling import write_samples

#: printed between text samples (nanoGPT's separator)
TEXT_SEPARATOR = "\n---------------\n"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m lit_gen sample", exit_on_error=False, description=__doc__)
    parser.add_argument("--ckpt_path", type=str, required=True, help="Checkpoint written by `fit`.")
    parser.add_argument(
        "--out_dir",
        type=str | None,
        default=None,
        help="Output folder (default: <run dir>/samples/<ckpt stem>).",
    )
    parser.add_argument(
        "--num_samples", type=int | None, default=None, help="How many samples (default: 64; text: 10)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the latent noise.")
    parser.add_argument("--batch_size", type=int, default=256, help="Samples generated per forward pass.")
    parser.add_argument(
        "--ema", type=bool, default=True, help="Sample from the EMA weights where the model has them."
    )
    parser.add_argument("--device", type=str, default="cpu", help="torch device, e.g. cpu or cuda.")
    parser.add_argument("--prompt", type=str, default="", help="Text models: the text to continue.")
    parser.add_argument("--max_new_tokens", type=int, default=500, help="Text models: tokens per sample.")
    parser.add_argument(
        "--temperature",
        type=float | None,
        default=None,
        help="Token models: softmax temperature (0: greedy).",
    )
    parser.add_argument(
        "--top_k", type=int | None, default=None, help="Token models: sample among the k likeliest tokens."
    )
    parser.add_argument(
        "--sampler",
        type=Sampler | None,
        default=None,
        help="Diffusion models: the sampler (a class of lit_gen.diffusion, e.g. DDIM, or a class path; its "
        "options as --sampler.steps, --sampler.eta ...; default: the model's).",
    )
    parser.add_argument(
        "--steps", type=int | None, default=None, help="Diffusion models: the sampler's number of steps."
    )
    parser.add_argument(
        "--guidance",
        type=float | None,
        default=None,
        help="Class-conditional diffusion models: classifier-free guidance weight (0: unconditional, "
        "1: conditional; default: the model's).",
    )
    parser.add_argument(
        "--labels",
        type=str | None,
        default=None,
        help="Class-conditional diffusion models: one class K, or a comma list cycled over the samples.",
    )
    return parser


#: ``sample`` options passed to ``generate`` by the models whose ``generate`` takes them
GENERATE_OPTIONS = ("sampler", "steps", "guidance", "labels")


def parse_labels(text: str) -> list[int]:
    """``"3"`` -> [3], ``"1,4,7"`` -> [1, 4, 7]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise LitGenError(
            f"labels: expected a class or a comma-separated list of classes, e.g. 3 or 1,4,7; got '{text}'"
        ) from None


def generate_options(model, args) -> dict:
    """The keyword arguments of ``model.generate`` that the command line set: ``ema`` where ``generate`` takes
    it, and the diffusion options (``--sampler``, ``--steps``, ``--guidance``, ``--labels``), an error for a
    model whose ``generate`` does not take one that was given."""
    accepted = inspect.signature(model.generate).parameters
    options = {"ema": args.ema} if "ema" in accepted else {}
    for name in GENERATE_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            raise LitGenError(
                f"{name}: only for diffusion / flow-matching models; this checkpoint holds a "
                f"{type(model).__name__}"
            )
        options[name] = parse_labels(value) if name == "labels" else value
    return options


def default_out_dir(ckpt_path: Path) -> Path:
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" else ckpt_path.parent
    return run_dir / "samples" / ckpt_path.stem


def write_text_samples(
    model,
    out_dir: Path,
    prompt: str,
    num_samples: int,
    max_new_tokens: int,
    rng: torch.Generator | None = None,
    stream: TextIO | None = None,
) -> Path:
    """Samples ``num_samples`` texts from a text model (``Autoregressive.stream_text``) one after the other,
    streamed to ``stream`` as they are generated and separated by a line of dashes as in nanoGPT, and writes
    them to ``out_dir/samples.txt``; returns that path."""
    texts = []
    for _ in range(num_samples):
        pieces = []
        for piece in model.stream_text(prompt, max_new_tokens, rng):
            pieces.append(piece)
            if stream is not None:
                stream.write(piece)
                stream.flush()
        texts.append("".join(pieces))
        if stream is not None:
            stream.write(TEXT_SEPARATOR)
            stream.flush()
    path = Path(out_dir) / "samples.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEXT_SEPARATOR.join(texts) + TEXT_SEPARATOR, encoding="utf-8")
    return path


def write_reconstructions(model, checkpoint: dict, out_dir: Path, num: int, seed: int) -> list[Path]:
    """``reconstructions.png``: the first ``num`` validation images (odd rows) above their reconstructions
    (even rows), for models with a ``reconstruct`` method; nothing when the training data cannot be loaded."""
    from lit_gen.sampling import save_image_grid

    datamodule = load_datamodule(checkpoint)
    if datamodule is None:
        return []
    try:
        datamodule.setup("validate")
        images = torch.cat([batch[0] for _, batch in zip(range(num), datamodule.val_dataloader())])[:num]
    except Exception as err:  # data moved or not downloaded: samples are still written
        print(f"lit_gen: no reconstructions (validation data unavailable: {str(err).splitlines()[0][:200]})")
        return []
    nrow = min(8, len(images))
    images = images[: len(images) - len(images) % nrow]  # whole rows only, so pairs stay aligned
    recons = model.reconstruct(images, rng=torch.Generator().manual_seed(seed)).cpu()
    pairs = [t for i in range(0, len(images), nrow) for t in (images[i : i + nrow], recons[i : i + nrow])]
    return [save_image_grid(torch.cat(pairs), out_dir / "reconstructions.png", nrow=nrow)]


def main(argv: list[str]) -> None:
    parser = build_parser()
    args = parser.instantiate_classes(parser.parse_args(argv))
    if args.num_samples is not None and args.num_samples < 1:
        raise LitGenError(f"num_samples must be a positive integer, got {args.num_samples}")
    if args.batch_size < 1:
        raise LitGenError(f"batch_size must be a positive integer, got {args.batch_size}")
    if args.steps is not None and args.steps < 1:
        raise LitGenError(f"steps must be a positive integer, got {args.steps}")
    ckpt_path = Path(args.ckpt_path)
    model, checkpoint = load_model(ckpt_path)
    try:
        model.to(torch.device(args.device))
    except (RuntimeError, AssertionError) as err:
        raise LitGenError(f"device: cannot use '{args.device}' ({err})") from None
    if args.num_samples is None:
        args.num_samples = 10 if getattr(model, "is_text_model", False) else 64
    out_dir = Path(args.out_dir) if args.out_dir else default_out_dir(ckpt_path)
    # the outermost folder this command creates: removed again if writing fails (nothing half-written)
    created = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        written = write_all(model, checkpoint, args, out_dir)
    except BaseException as err:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(err, OSError):  # a read-only or full file system, a file in the way
            raise LitGenError(
                f"out_dir: cannot write samples into '{out_dir}' ({err.strerror or err})"
            ) from None
        raise
    text = getattr(model, "is_text_model", False)  # the text itself went to stdout
    print(
        f"lit_gen: wrote {args.num_samples} samples to {out_dir} ({', '.join(p.name for p in written)})",
        file=sys.stderr if text else sys.stdout,
    )


def write_all(model, checkpoint: dict, args, out_dir: Path) -> list[Path]:
    """Generates ``args.num_samples`` samples and writes their files into ``out_dir``; returns the paths."""
    rng = torch.Generator().manual_seed(args.seed)
    if hasattr(model, "configure_sampling"):  # token models: temperature, top-k; text is streamed to stdout
        model.configure_sampling(args.temperature, args.top_k)
        if model.is_text_model:
            return [
                write_text_samples(
                    model, out_dir, args.prompt, args.num_samples, args.max_new_tokens, rng, sys.stdout
                )
            ]
    kwargs = generate_options(model, args)
    chunks = []
    for start in range(0, args.num_samples, args.batch_size):
        count = min(args.batch_size, args.num_samples - start)
        chunks.append(model.generate(count, rng=rng, **kwargs).cpu())
    samples = torch.cat(chunks)
    datamodule = load_datamodule(checkpoint) if samples.dim() == 2 and samples.is_floating_point() else None
    written = write_samples(samples, out_dir, modes=getattr(datamodule, "modes", None))
    if hasattr(model, "reconstruct"):
        written += write_reconstructions(model, checkpoint, out_dir, min(args.num_samples, 32), args.seed)
    return written
