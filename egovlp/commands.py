"""Library-level commands: `egovlp convert` and `egovlp embed`."""

from __future__ import annotations

import json
import sys

import torch

from egovlp.cli_args import OneLineParser
from egovlp.errors import InputError
from egovlp.validate import (
    add_model_arguments,
    input_file,
    non_negative_float,
    output_dir,
    positive_int,
    resolve_device,
)


def convert_main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="egovlp convert",
        description="Convert a released EgoVLP, LaViLa or EgoVLPv2 checkpoint to safetensors + config.json "
        "(the family is read from the file's keys; docs/checkpoints.md).",
    )
    parser.add_argument("checkpoint", help="released checkpoint (.pth) of EgoVLP, LaViLa or EgoVLPv2")
    parser.add_argument("out_dir", help="output directory")
    parser.add_argument(
        "--config",
        default=None,
        help="model config name or YAML (default: EgoVLP's base architecture; LaViLa and EgoVLPv2: read from the file)",
    )
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="EgoVLPv2: a Hugging Face RoBERTa tokenizer folder (tokenizer.json), copied to OUT/tokenizer/",
    )
    args = parser.parse_args(argv)
    input_file(args.checkpoint, "checkpoint")
    output_dir(args.out_dir, "out_dir")

    from egovlp.checkpoint import convert_checkpoint
    from egovlp.tokenizer import find_tokenizer_json

    if args.tokenizer is not None:
        find_tokenizer_json(args.tokenizer)  # a bad folder fails before the (slow) conversion
    cfg = convert_checkpoint(args.checkpoint, args.out_dir, config=args.config, tokenizer=args.tokenizer)
    print(json.dumps({"out_dir": args.out_dir, "family": cfg.family, "config_hash": cfg.config_hash()}))
    return 0


def embed_main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="egovlp embed", description="Embed a text or a video clip with an EgoVLP model; prints JSON."
    )
    add_model_arguments(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", action="append", help="a text to embed (repeatable)")
    what.add_argument("--video", help="a video file")
    parser.add_argument("--start", type=non_negative_float, default=None, help="clip start (seconds)")
    parser.add_argument(
        "--end", type=non_negative_float, default=None, help="clip end (seconds; default: video end)"
    )
    parser.add_argument("--frames", type=positive_int, default=4, help="frames sampled from the clip")
    parser.add_argument("--normalize", action="store_true", help="L2-normalize the embeddings")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if args.config is not None:
        input_file(args.config, "--config")
    if args.video is not None:
        input_file(args.video, "--video")
    if args.text is not None and not all(t.strip() for t in args.text):
        raise InputError("--text: empty text")

    import egovlp
    from egovlp.precision import resolve_precision

    precision = resolve_precision(args.precision, device)
    model = egovlp.load_model(args.model, config=args.config, device=device).set_precision(precision)
    if args.text:
        emb = model.encode_text(args.text)
        items = [{"text": t} for t in args.text]
    else:
        from egovlp.transforms import load_clip
        from egovlp.video import video_info

        info = video_info(args.video)
        start = 0.0 if args.start is None else args.start
        end = info.duration if args.end is None else args.end
        if not 0 <= start < end:
            raise InputError(f"{args.video}: need 0 <= start < end, got start={start} end={end}")
        if start >= info.duration:
            raise InputError(f"{args.video}: start {start}s is past the video's end ({info.duration:.2f}s)")
        frames = load_clip(args.video, start, end, num_frames=args.frames, size=model.cfg.video.img_size)
        emb = model.encode_video(frames.unsqueeze(0))
        items = [{"video": args.video, "start": start, "end": min(end, info.duration)}]
    if args.normalize:
        emb = torch.nn.functional.normalize(emb, dim=-1, eps=1e-8)
    for item, vec in zip(items, emb.tolist(), strict=True):
        item["embedding"] = vec
    json.dump(
        {"model": args.model, "dim": emb.shape[-1], "precision": precision.name, "data": items}, sys.stdout
    )
    sys.stdout.write("\n")
    return 0
