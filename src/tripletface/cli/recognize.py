"""Recognition subcommands: enroll, enroll-dir, identify, verify, remove, people, cluster,
calibrate.

Exit codes: 0 done, 1 no match or failed verification, 2 bad input (some file of a folder could
not be used, even if the others were processed).
"""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

from tripletface.errors import InputError, PhotoTakenError, TripletfaceError
from tripletface.models.runtime import RUNTIMES
from tripletface.outputs import cannot_write

DETECTORS = ("auto", "hog", "cnn", "none")


def recognizer_options() -> argparse.ArgumentParser:
    """The gallery, encoder, threshold and runtime: options of every command that recognises."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gallery",
        help="gallery file, or postgresql://USER@HOST[:PORT]/DB (default: per-user data dir)",
    )
    common.add_argument(
        "--encoder", default="dlib-resnet", help="encoder name or .pt checkpoint (dlib-resnet)"
    )
    common.add_argument(
        "--threshold", type=float, help="accept squared distances <= this (overrides the gallery)"
    )
    common.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="what runs the encoder (auto: onnx-int8 when onnxruntime is installed, no torch)",
    )
    return common


def _options() -> argparse.ArgumentParser:
    """Options shared by every photo recognition subcommand."""
    common = argparse.ArgumentParser(add_help=False, parents=[recognizer_options()])
    common.add_argument(
        "--detector",
        choices=DETECTORS,
        default="auto",
        help="face detector; none feeds the whole image to the encoder (auto: HOG, CNN fallback)",
    )
    common.add_argument(
        "--workers", type=int, default=2, help="processes detecting faces in folders (2)"
    )
    common.add_argument(
        "--tta",
        action="store_true",
        help="average each face's embedding with its mirror image's (steadier, 2x encoder time)",
    )
    return common


def register(subparsers) -> None:
    """Add the recognition subcommands."""
    common = _options()

    def add(name: str, run, help: str) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, parents=[common], help=help, description=help)
        parser.set_defaults(run=run)
        return parser

    largest = {"action": "store_true", "help": "enroll the largest face of a photo with several"}
    p = add("enroll", enroll, "enroll photos of one person (all or none)")
    p.add_argument("name")
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO")
    p.add_argument("--largest", **largest)
    p = add("enroll-dir", enroll_dir, "enroll a folder holding one sub-folder of photos per person")
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--largest", **largest)
    p = add("identify", identify, "name every face in a photo or a folder of photos")
    p.add_argument("target", type=Path, metavar="PHOTO|DIR")
    p.add_argument("--annotate", type=Path, metavar="OUTDIR", help="write copies with boxes drawn")
    p.add_argument("--json", action="store_true", help="one JSON array, an object per image")
    p = add("verify", verify, "is NAME in PHOTO? exit 0 if so, 1 if not")
    p.add_argument("photo", type=Path, metavar="PHOTO")
    p.add_argument("name")
    p = add("remove", remove, "delete a person and their enrolled faces")
    p.add_argument("name")
    p = add("people", people, "list enrolled people and their number of faces")
    p.add_argument("--json", action="store_true", help="a JSON array of {name, faces}")
    p = add("cluster", cluster, "group the faces of unlabelled photos by person (JSON)")
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--links", type=Path, metavar="OUTDIR", help="also a folder of links per group")
    p = add("calibrate", calibrate, "choose the threshold on labelled photos, store it")
    p.add_argument("folder", type=Path, metavar="DIR")
    p.add_argument("--far", type=float, default=1e-3, help="false accept rate to allow (1e-3)")


def _recognizer(args, read_only: bool = False, create: bool = True):
    """The FaceRecognizer the options ask for; use it in a ``with`` block, which closes the
    gallery (and saves its search index) however the command ends."""
    from tripletface.recognize import FaceRecognizer

    return FaceRecognizer(
        args.gallery,
        args.encoder,
        args.threshold,
        _detector(args),
        read_only,
        args.runtime,
        tta=args.tta,
        create=create,
    )


def _detector(args) -> str | None:
    """The --detector choice as the library takes it: None feeds whole images to the encoder."""
    return None if args.detector == "none" else args.detector


def _faces_of(args, paths: list[str]):
    """Context giving the paths' faces, detection started now in worker processes while the
    encoder loads, when its input is known without loading it (a registered name); else giving
    the paths themselves. Leaving it stops the workers, also on an error."""
    from tripletface.faces.extract import ChipMaker, FaceStream
    from tripletface.models import default_input

    known = default_input(args.encoder)
    if known is None:
        return contextlib.nullcontext(paths)
    return FaceStream(ChipMaker.for_encoder(_detector(args), *known), paths, args.workers)


def _images_in(folder: Path) -> list[Path]:
    """Image files under folder (recursively), sorted; InputError if there are none."""
    from tripletface.data.images import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give a folder of photos")
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
    )
    if not files:
        raise InputError(f"{folder}: no photos found ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def _progress(items, total: int, what: str):
    """A progress bar on stderr, shown only on a terminal and for more than one photo."""
    if total <= 1:
        return items  # and tqdm is not even imported: a one-photo command starts faster
    from tqdm import tqdm

    return tqdm(items, total=total, desc=what, unit="photo", file=sys.stderr, disable=None)


def _warn(path, error: TripletfaceError) -> None:
    """One line on stderr for a file of a folder that could not be used."""
    from tqdm import tqdm

    message = str(error) if str(error).startswith(str(path)) else f"{path}: {error}"
    tqdm.write(f"tripletface: skipped {message}", file=sys.stderr)


def enroll(args) -> int:
    with _faces_of(args, [str(p) for p in args.photos]) as faces, _recognizer(args) as rec:
        records = rec.enroll_photos(args.name, faces, args.largest, args.workers)
    for record in records:
        state = "enrolled" if record.added else "already enrolled"
        print(f"{state} {record.name} from {record.source}")
    return 0


def enroll_dir(args) -> int:
    from tripletface.data.images import person_images

    pairs = [
        (name, str(path)) for name, paths in person_images(args.folder).items() for path in paths
    ]
    if not pairs:
        raise InputError(f"{args.folder}: no photos in sub-folders; put each person's in DIR/NAME/")
    with _faces_of(args, [path for _, path in pairs]) as faces, _recognizer(args) as rec:
        added = skipped = taken = 0
        for path, result in _progress(
            rec.enroll_folders(pairs, args.largest, args.workers, faces), len(pairs), "enroll"
        ):
            if isinstance(result, TripletfaceError):
                _warn(path, result)
                skipped += 1
                taken += isinstance(result, PhotoTakenError)
            else:
                added += result.added
    persons = len({name for name, _ in pairs})
    why = f" ({taken} already enrolled as someone else)" if taken else ""
    print(
        f"enrolled {added} new faces of {persons} people from {args.folder}; {skipped} skipped{why}"
    )
    return 2 if skipped else 0


def _match_json(match) -> dict:
    return {
        "box": list(match.box),
        "name": match.name,
        "distance": round(match.distance, 6),
        "confidence": match.confidence,
    }


def _sure(confidence: float | None) -> str:
    """ ", confidence 97.1%" for a confidence, nothing without one."""
    return "" if confidence is None else f", confidence {100 * confidence:.1f}%"


def identify(args) -> int:
    target: Path = args.target
    files = _images_in(target) if target.is_dir() else [target]
    if args.annotate:
        _check_annotate(target, args.annotate)
    with (
        _faces_of(args, list(map(str, files))) as faces,
        _recognizer(args, read_only=True) as rec,
    ):
        results, found, bad = [], False, 0
        outcomes = rec.identify_files(faces, args.workers)
        for path, outcome in _progress(outcomes, len(files), "identify"):
            if isinstance(outcome, TripletfaceError):
                if not target.is_dir():
                    raise outcome
                _warn(path, outcome)
                bad += 1
                results.append({"file": path, "faces": [], "error": str(outcome)})
                continue
            found = found or any(m.name is not None for m in outcome)
            results.append({"file": path, "faces": [_match_json(m) for m in outcome]})
            if args.annotate:
                _annotate(Path(path), outcome, _annotated_path(Path(path), target, args.annotate))
            if not args.json:
                _print_matches(path, outcome)
    if args.json:
        # One image per line: readable, greppable, and still one JSON array.
        print("[\n" + ",\n".join(json.dumps(item) for item in results) + "\n]")
    return 2 if bad else (0 if found else 1)


def _print_matches(path: str, matches) -> None:
    if not matches:
        print(f"{path}: no face found")
    for m in matches:
        who = m.name if m.name is not None else "unknown"
        print(f"{path}: {who} (distance {m.distance:.3f}{_sure(m.confidence)}) at {list(m.box)}")


def _check_annotate(target: Path, outdir: Path) -> None:
    """InputError when --annotate's copies would replace or join the photos identified."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--annotate {outdir}: a file, not a folder; give a folder for the copies")
    here, out = target.resolve(), outdir.resolve()
    if target.is_dir():
        clash = out == here or here in out.parents
    else:
        clash = _annotated_path(target, target, outdir).resolve() == here
    if clash:
        raise InputError(
            f"--annotate {outdir}: the copies would replace or join the photos of {target}; "
            "give a folder outside it"
        )


def _annotated_path(path: Path, target: Path, outdir: Path) -> Path:
    """Where the annotated PNG copy of path goes: its relative path under outdir, ".png" added
    unless it ends so (a.jpg and a.png of one folder get a copy each)."""
    out = outdir / (path.relative_to(target) if target.is_dir() else Path(path.name))
    return out if out.suffix.lower() == ".png" else out.with_name(f"{out.name}.png")


def _annotate(path: Path, matches, out: Path) -> None:
    """Write a copy of the image with each face's box, name and distance."""
    from tripletface.data.images import draw_labelled_boxes, load_image, save_image_atomic

    image = draw_labelled_boxes(
        load_image(path),
        [m.box for m in matches],
        [f"{m.name or 'unknown'} {m.distance:.2f}" for m in matches],
        [m.name is not None for m in matches],
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image_atomic(out, image)
    except OSError as error:
        raise cannot_write("--annotate", out, error, "give a folder you can write to") from None


def verify(args) -> int:
    with _recognizer(args, read_only=True) as rec:
        result = rec.verify(str(args.photo), args.name)
    verdict = "same" if result.same else "different"
    print(
        f"{verdict}: {args.photo} vs {args.name} (distance {result.distance:.3f}"
        f"{_sure(result.confidence)})"
    )
    return 0 if result.same else 1


def remove(args) -> int:
    with _recognizer(args, create=False) as rec:  # a mistyped --gallery is no new gallery
        faces = rec.remove(args.name)
    print(f"removed {args.name} ({faces} faces)")
    return 0


def people(args) -> int:
    with _recognizer(args, read_only=True) as rec:
        listing = rec.people()
    if args.json:
        print(json.dumps([{"name": name, "faces": n} for name, n in listing]))
    else:
        # One write: a gallery of a million faces may list a hundred thousand people.
        sys.stdout.write("".join(f"{name}\t{n}\n" for name, n in listing))
    return 0


def cluster(args) -> int:
    from tripletface.clustering import cluster_embeddings

    files = _images_in(args.folder)
    with (
        _faces_of(args, list(map(str, files))) as stream,
        _recognizer(args, read_only=True) as rec,
    ):
        threshold = rec.threshold
        faces, embeddings, errors = [], [], []
        for item in _progress(rec.embed_files(stream, args.workers), len(files), "cluster"):
            if item.error is not None:
                _warn(item.path, item.error)
                errors.append({"file": item.path, "error": str(item.error)})
                continue
            faces += [{"file": item.path, "box": list(box)} for box in item.boxes]
            embeddings.append(item.embeddings)
    labels = cluster_embeddings(np.concatenate(embeddings), threshold) if faces else []
    groups = [[] for _ in range(max(labels, default=-1) + 1)]
    for face, label in zip(faces, labels, strict=True):
        groups[label].append(face)
    if args.links:
        _link_groups(groups, args.links)
    print(json.dumps({"threshold": threshold, "clusters": groups, "errors": errors}, indent=1))
    return 2 if errors else 0


def _link_groups(groups: list[list[dict]], outdir: Path) -> None:
    """outdir/person_K/ holds a symbolic link to each photo with a face of group K, and
    nothing else: the links of an earlier run there are replaced."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"--links {outdir}: a file, not a folder; give a folder for the links")
    try:
        old = list(outdir.glob("person_*/*"))
        others = [path for path in old if not path.is_symlink()]
        if others:
            raise InputError(
                f"--links {outdir}: {others[0]} is no link of an earlier cluster run; give a "
                "new or empty folder"
            )
        for path in old:
            path.unlink()
        for k, group in enumerate(groups):
            folder = outdir / f"person_{k:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, face in enumerate(group):
                source = Path(face["file"]).resolve()
                (folder / f"{i:04d}_{source.name}").symlink_to(source)
    except OSError as error:
        raise cannot_write("--links", outdir, error, "give a folder you can write to") from None


def calibrate(args) -> int:
    from tripletface.data.images import person_images

    named = {str(p): name for name, paths in person_images(args.folder).items() for p in paths}
    with _recognizer(args) as rec:
        with _faces_of(args, list(named)) as faces:
            embeddings, labels, skipped = [], [], 0
            for item in _progress(rec.embed_files(faces, args.workers), len(named), "calibrate"):
                if item.error is not None or not item.boxes:
                    _warn(item.path, item.error or InputError("no face found"))
                    skipped += 1
                    continue
                embeddings.append(item.embeddings)
                labels.append(named[item.path])
        result = _calibrated(rec, embeddings, labels, args.folder, args.far)
    print(
        f"threshold {result.threshold:.4f} stored in {rec.gallery_path}: FAR {result.far:.2e}, "
        f"FRR {result.frr:.2%} on {result.same_pairs} same-person and "
        f"{result.different_pairs} different-person pairs; confidence refitted on them "
        f"({result.confidence.method})"
    )
    if result.different_pairs * args.far < 10:
        print(
            f"note: {result.different_pairs} different-person pairs measure a FAR of {args.far:g} "
            "coarsely; calibrate on more people for a sharper threshold"
        )
    return 2 if skipped else 0


def _calibrated(rec, embeddings: list[np.ndarray], labels: list[str], folder: Path, far: float):
    """``rec.calibrate`` at ``far`` on one face per photo of ``folder`` (each photo's faces a
    K x D block)."""
    from tripletface.faces.choice import similar_faces

    if len(set(labels)) < 2:
        raise InputError(f"{folder}: calibration needs faces of at least two people")
    # Of a photo with several faces, the one most like the person's other photos; else the
    # largest (bench/face_choice.py).
    chosen = [max(k, 0) for k in similar_faces(embeddings, labels)]
    picked = np.stack([rows[k] for rows, k in zip(embeddings, chosen, strict=True)])
    return rec.calibrate(picked, labels, far)
