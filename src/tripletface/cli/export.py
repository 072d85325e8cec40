"""``tripletface export``: an encoder as an ONNX model that onnxruntime runs without torch."""

from pathlib import Path

from tripletface.errors import InputError


def register(subparsers) -> None:
    """Add the export subcommand."""
    help = "export an encoder to ONNX (N x H x W x 3 uint8 chips -> unit-length embeddings)"
    p = subparsers.add_parser("export", help=help, description=help)
    p.add_argument("encoder", metavar="ENCODER", help="encoder name or .pt checkpoint")
    p.add_argument("out", type=Path, metavar="OUT.onnx")
    p.add_argument(
        "--photos",
        type=Path,
        nargs="+",
        metavar="PHOTO",
        help="check the export on the faces of these photos (default: synthetic faces)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="quantise to int8, calibrated on the checked chips (see bench/onnx_int8.py)",
    )
    p.set_defaults(run=export)


def export(args) -> int:
    if args.out.suffix != ".onnx":
        raise InputError(f"{args.out}: give the output file a .onnx suffix")
    from tripletface.models import load_encoder
    from tripletface.models.onnx_export import export_onnx, synthetic_chips
    from tripletface.models.runtime import TorchRuntime

    encoder = load_encoder(args.encoder)
    info = TorchRuntime(encoder).info
    chips = _photo_chips(args.photos, info) if args.photos else synthetic_chips(info.input_size)
    difference = export_onnx(encoder, args.out, chips)
    what = (
        f"{len(chips)} chips of {len(args.photos)} photos" if args.photos else "8 synthetic faces"
    )
    print(
        f"wrote {args.out}: {args.encoder} ({info.embedding_dim}-d, fingerprint "
        f"{info.fingerprint}), max |onnx - torch| {difference:.1e} on {what}"
    )
    if args.int8:
        from tripletface.models.quantize import quantize_int8

        quantize_int8(args.out, args.out, chips)
        print(f"quantised {args.out} to int8, calibrated on the same chips")
    return 0


def _photo_chips(photos: list[Path], info):
    """The encoder's chips of every face in the photos; InputError if there are fewer than 2."""
    import numpy as np

    from tripletface.data.images import load_image
    from tripletface.faces.extract import ChipMaker

    maker = ChipMaker.for_encoder("auto", info.input_size[0], info.chip_padding)
    chips = [maker(load_image(photo))[1] for photo in photos]
    stacked = np.concatenate(chips)
    if len(stacked) < 2:
        raise InputError(
            f"{len(stacked)} face found in {len(photos)} photos: the check needs at least 2"
        )
    return stacked
