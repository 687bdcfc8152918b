"""Console scripts ``shv-train`` and ``shv-infer``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shv_toolkit.core.errors import ShvError

log = logging.getLogger(__name__)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def train_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shv-train", description="Train SINGER on an SHV manifest (see singer_model.train).")
    p.add_argument("--manifest", help="train.parquet written by shv-build")
    p.add_argument("--val-manifest", help="manifest of validation clips (default: test.parquet next to --manifest)")
    p.add_argument("--config", help="training config YAML (e.g. singer_model/configs/singer_full.yaml)")
    p.add_argument("--out", help="output directory (cache, checkpoints, logs); with --dump-checkpoint-layout a JSON file")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--dump-checkpoint-layout", choices=("hallo", "singer"),
                   help="write the names/shapes the model reads from the published net.pth to --out and exit")
    p.add_argument("--plan", action="store_true", help="print the compute plan (singer_model.plan) and exit")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true")
    args, rest = p.parse_known_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.dump_checkpoint_layout:
            if not args.out:
                p.error("--dump-checkpoint-layout needs --out FILE.json")
            from singer_model.layout import write_layout

            path = write_layout(args.dump_checkpoint_layout, args.out)
            print(f"wrote {path}")
            return 0
        if args.plan:
            try:
                from singer_model import plan
            except ImportError as e:
                print(f"shv-train: --plan is unavailable ({e})", file=sys.stderr)
                return 2
            return int(plan.main(rest) or 0)
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        if not (args.manifest and args.config and args.out):
            p.error("--manifest, --config and --out are required for training")
        from singer_model.train import TrainConfig, train

        cfg = TrainConfig.from_file(args.config)
        result = train(cfg, args.manifest, args.out, resume=args.resume, max_steps=args.max_steps,
                       val_manifest=args.val_manifest, progress=not args.no_progress)
        print(f"trained to step {result.step}; last loss {result.last_loss:.5f}; checkpoint {result.checkpoint}")
        return 0
    except ShvError as e:
        print(f"shv-train: error: {e}", file=sys.stderr)
        return 1


def infer_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="shv-infer", description="Generate a singing video from one image and one audio file.")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (config.yaml + weights)")
    p.add_argument("--image", required=True, help="reference image (any format OpenCV reads)")
    p.add_argument("--audio", required=True, help="driving audio (any format; resampled to 16 kHz mono)")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--variant", default="singer", choices=("singer", "singer-no-msm", "singer-no-sfm", "singer-no-both"))
    p.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's inference.steps, else 40)")
    p.add_argument("--guidance-scale", type=float,
                   help="classifier-free guidance (default: the checkpoint's inference.guidance_scale, else 3.5)")
    p.add_argument("--cfg-uncond", choices=("release", "drop_reference"),
                   help="what the unconditional branch drops (singer_model.infer; default: the checkpoint's, else release)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                   help="network and VAE dtype (auto: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    import cv2

    from shv_toolkit.core import media
    from shv_toolkit.core.errors import MediaError
    from singer_model.infer import generate_video

    try:
        bgr = cv2.imread(args.image, cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"cannot read image {args.image}")
        audio = media.read_audio(args.audio, sample_rate=16000)
        frames = generate_video(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), audio, args.checkpoint, variant=args.variant,
                                fps=args.fps, seed=args.seed, device=args.device, steps=args.steps,
                                guidance_scale=args.guidance_scale, out=args.out, progress=True,
                                cfg_uncond=args.cfg_uncond, dtype=args.dtype)
    except ShvError as e:
        print(f"shv-infer: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {Path(args.out)} ({len(frames)} frames at {args.fps:g} fps)")
    return 0
