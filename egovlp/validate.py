"""Input checks shared by every command: numeric limits, device names, and paths.

Each command validates its arguments here, at its entry, so that a bad value ends in one line
naming the input (exit 2 through the dispatcher) instead of a traceback deep inside the run.

- `positive_int`, `non_negative_int`, `positive_float`, `non_negative_float`: argparse `type=`
  callables; argparse turns their `ArgumentTypeError` into "argument --flag: ..." and exit 2.
- `resolve_device(name)`: "auto", "cpu", "cuda", "cuda:N", "mps" -> `torch.device`, or InputError.
- `output_dir`, `output_file`, `input_file`, `input_dir`: path checks that name the flag.
- `write_error(path, err)`: an OSError from a write -> an InputError naming the path and the reason.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from egovlp.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "input_dir",
    "input_file",
    "is_write_error",
    "os_error_reason",
    "non_negative_float",
    "non_negative_int",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "resolve_device",
    "write_error",
]


# ----------------------------------------------------------------------------- numbers


def _parse_int(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _parse_float(text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _argparse_number(parse: Callable[[str], float], ok: Callable[[float], bool], rule: str, name: str):
    """An argparse `type=` callable: `parse` the text, then refuse values that are not `ok`."""

    def convert(text: str):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value:g}")
        return value

    convert.__name__ = convert.__qualname__ = name  # argparse names the type in its messages
    convert.__doc__ = f"argparse type: {rule}."
    return convert


positive_int = _argparse_number(_parse_int, lambda v: v >= 1, "a positive integer", "positive_int")
non_negative_int = _argparse_number(_parse_int, lambda v: v >= 0, "an integer >= 0", "non_negative_int")
positive_float = _argparse_number(_parse_float, lambda v: v > 0, "a number > 0", "positive_float")
non_negative_float = _argparse_number(_parse_float, lambda v: v >= 0, "a number >= 0", "non_negative_float")


# ----------------------------------------------------------------------------- devices

_DEVICE_RE = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


def add_model_arguments(parser: argparse.ArgumentParser, device: str = "auto") -> None:
    """--model, --config, --device and --precision, as every command that loads one model takes them."""
    from egovlp.precision import add_precision_argument

    parser.add_argument("--model", required=True, help="checkpoint (.pth) or model directory")
    parser.add_argument("--config", default=None, help="model YAML for a .pth of another architecture")
    parser.add_argument("--device", default=device, help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    add_precision_argument(parser)


def resolve_device(name: str | None, flag: str = "--device") -> torch.device:
    """A device name -> `torch.device`; InputError for a bogus name or an absent accelerator.

    "auto" (or None) picks CUDA when available, else CPU. "cuda:N" checks that GPU N exists.
    """
    import torch

    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = _DEVICE_RE.match(text)
    if not match:
        raise InputError(f"{flag} {name!r}: not a device (use auto, cpu, cuda, cuda:N)")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{flag} {name}: CUDA is not available on this machine (use --device cpu)")
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise InputError(f"{flag} {name}: no such GPU (this machine has {count})")
        return torch.device(text)
    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        raise InputError(f"{flag} {name}: MPS is not available on this machine (use --device cpu)")
    return torch.device(text)


# ----------------------------------------------------------------------------- paths


def _label(path: str | os.PathLike, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _kind(path: Path, label: str) -> str:
    """ "missing", "dir" or "file" for `path`; InputError when it cannot even be looked at."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "missing"  # a parent is a file; the parent walk reports it
    except OSError as err:
        raise InputError(f"{label}: cannot access ({_reason(err)})") from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def _first_existing_parent(path: Path, label: str) -> Path:
    probe = path
    while _kind(probe, label) == "missing" and probe != probe.parent:
        probe = probe.parent
    return probe


def _check_writable_dir(folder: Path, label: str) -> None:
    """Write access by trying (root passes `os.access` even on a read-only mount)."""
    try:
        fd, name = _probe_create(folder)
    except OSError as err:
        raise InputError(f"{label}: folder is not writable ({_reason(err)})") from None
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


def _probe_create(folder: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=".egovlp-write-check.", dir=folder)


def output_dir(path: str | os.PathLike, flag: str | None = None) -> Path:
    """Create the output folder `path` (and parents); InputError if it is a file or not writable."""
    folder = Path(path).expanduser()
    label = _label(path, flag)
    if _kind(folder, label) == "file":
        raise InputError(f"{label}: is a file, expected a folder")
    _make_writable_dir(folder, label, "a folder")
    return folder


def _make_writable_dir(folder: Path, label: str, what: str) -> None:
    """Create `folder` (and parents) and check that a file can be created in it; InputError if not."""
    existing = _first_existing_parent(folder, label)
    if _kind(existing, label) != "dir":
        raise InputError(f"{label}: {existing} is a file, cannot create {what} under it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"{label}: cannot create the folder {folder} ({_reason(err)})") from None
    _check_writable_dir(folder, label)


def output_file(path: str | os.PathLike, flag: str | None = None) -> Path:
    """Check that the file `path` can be written (creating its parent folder); InputError if not."""
    file = Path(path).expanduser()
    label = _label(path, flag)
    kind = _kind(file, label)
    if kind == "dir":
        raise InputError(f"{label}: is a folder, expected a file path")
    if str(path).endswith(os.sep):
        raise InputError(f"{label}: expected a file path, not a folder")
    _make_writable_dir(file.parent, label, "a file")
    if kind == "file" and not os.access(file, os.W_OK):
        raise InputError(f"{label}: file is not writable")
    return file


def input_file(path: str | os.PathLike, flag: str | None = None) -> Path:
    """InputError unless `path` is an existing, readable regular file."""
    file, label = _existing(path, flag, "file")
    try:
        with open(file, "rb") as f:
            f.read(1)
    except OSError as err:
        raise InputError(f"{label}: cannot read the file ({_reason(err)})") from None
    return file


def input_dir(path: str | os.PathLike, flag: str | None = None) -> Path:
    """InputError unless `path` is an existing folder whose entries can be listed."""
    folder, label = _existing(path, flag, "folder")
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as err:
        raise InputError(f"{label}: cannot read the folder ({_reason(err)})") from None
    return folder


def _existing(path: str | os.PathLike, flag: str | None, what: str) -> tuple[Path, str]:
    """`path` expanded, and its label; InputError unless it exists and is a `what` (file or folder)."""
    target = Path(path).expanduser()
    label = _label(path, flag)
    kind = _kind(target, label)
    if kind == "missing":
        raise InputError(f"{label}: {what} not found")
    if (kind == "dir") != (what == "folder"):
        raise InputError(f"{label}: is {'a folder' if kind == 'dir' else 'a file'}, expected a {what}")
    return target, label


# ----------------------------------------------------------------------------- write errors

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent is not a folder",
    errno.EISDIR: "is a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}


def _reason(err: OSError) -> str:
    if err.errno in _REASONS:
        return _REASONS[err.errno]
    return err.strerror or type(err).__name__


def write_error(path: str | os.PathLike | None, err: OSError) -> InputError:
    """An OSError raised while writing `path` -> an InputError naming the path and the reason."""
    where = path if path is not None else (err.filename or "output")
    return InputError(f"{where}: cannot write ({_reason(err)})")


def os_error_reason(err: OSError) -> str:
    """A short, plain reason for an OSError ("no space left on the device", "permission denied")."""
    return _reason(err)


def is_write_error(err: BaseException) -> bool:
    """True for the OSErrors a full, read-only or forbidden output produces (not bugs)."""
    return isinstance(err, OSError) and err.errno in _REASONS
