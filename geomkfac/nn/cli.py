"""The ``geomkfac train`` subcommand: train an MLP on the embedded digits (or your data) with
one or several optimizers, from the same initialization, and write metrics, checkpoints and a
loss plot.

Examples (shell)::

    geomkfac train --arch 64-128-64-32-64-128-64 --act tanh --task autoencoder \\
        --optimizer kfac,sgd,adam --lr kfac=1,sgd=0.02,adam=1e-3 --momentum sgd=0.9 \\
        --damping 0.1 --opt-arg kfac:kl_clip=0.01 --steps 500 --out runs/ae
    geomkfac train --task classification --arch 64-100-10 --optimizer kfac --epochs 5 \\
        --opt-arg fisher=exact
    geomkfac train --idx-images train-images-idx3-ubyte.gz --idx-labels train-labels-idx1-ubyte.gz \\
        --task classification --arch 784-300-10 --optimizer adam --lr 1e-3

Convolutional and recurrent networks (see :mod:`geomkfac.nn.architectures` for the layer
strings)::

    geomkfac train --model cnn --task classification --optimizer kfac,sgd --steps 200
    geomkfac train --arch conv8k3p1-max2-conv16k3p1-avg2-dense10 --act relu --task classification
    geomkfac train --model rnn --task classification          # digits row by row, 8 steps
    geomkfac train --model rnn --task sequence                # predict the next row
    geomkfac train --model rnn --data seqs.npz --task classification   # X (N, T, d), Y (N,)

``--model cnn`` views the digits (and IDX images) as ``1×s×s`` images, ``--model rnn`` as ``s``
steps of ``s`` pixels; an ``.npz`` given with ``--data`` is used with its own shape.

``--arch`` lists the FULL layer sizes, input width first and output width last
(``64-128-64-32-64-128-64`` is the digits autoencoder: 64 pixels in, 64 out). Both ends are
checked against the data: the input width must equal the data's, the output width must equal
the target width (autoencoder) or cover every label (classification). Without ``--arch`` the
widths come from the data: ``d-128-64-32-64-128-d`` for the autoencoder, ``d-128-C`` for
classification.

Output files in ``--out DIR``: ``metrics-<optimizer>.csv`` (or ``.jsonl``),
``checkpoint-<optimizer>.npz``, and ``loss.png`` with every optimizer's loss curves. ``DIR``
must be new or empty: a non-empty one is refused unless ``--resume`` (continue the runs in
it) or ``--force`` (delete the files an earlier run wrote there, of every optimizer, then
start afresh). ``--threads N`` limits the BLAS threads (:mod:`geomkfac.threads`);
``--workers N`` splits the batches of ``sgd`` and ``adam`` over N threads
(:mod:`geomkfac.nn.parallel`).
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys

import numpy as np

from geomkfac.errors import ConfigurationError, DataError

__all__ = ["add_parser", "run", "parse_arch", "parse_hyper_values", "parse_opt_args"]

_DESCRIPTION = """\
Train an MLP on the embedded 8x8 digits (or your .npz / IDX data) with one or several
optimizers, one after the other from the same initialization. Writes, into --out DIR,
metrics-<optimizer>.csv (or .jsonl), checkpoint-<optimizer>.npz and loss.png (every
optimizer's loss curves on one figure), then prints a summary table.

--arch lists the FULL layer sizes, input width first and output width last
(64-128-64-32-64-128-64 is the digits autoencoder). Both ends are checked against the
data; without --arch they come from the data.

--out DIR must be new or empty, unless --resume (continue the runs saved there) or --force
(delete an earlier run's files there first, so none of another optimizer is left stale)."""

_EPILOG = """\
examples:
  geomkfac train --model cnn --task classification --optimizer kfac,sgd --act relu \\
      --lr kfac=0.3,sgd=0.1 --momentum sgd=0.9 --damping 0.01 --steps 300
  geomkfac train --arch conv8k3p1-max2-conv16k3p1-avg2-dense10 --task classification
  geomkfac train --model rnn --task sequence --optimizer kfac,adam --steps 300
  geomkfac train --model rnn --data seqs.npz --task classification
  geomkfac train --arch 64-128-64-32-64-128-64 --act tanh --optimizer kfac,sgd,adam \\
      --lr kfac=1,sgd=0.02,adam=1e-3 --momentum sgd=0.9 --damping 0.1 \\
      --opt-arg kfac:kl_clip=0.01 --steps 500 --out runs/ae
  geomkfac train --task classification --arch 64-100-10 --optimizer kfac --epochs 5 \\
      --opt-arg fisher=exact --opt-arg kfac:inverse_update_period=5
  geomkfac train --optimizer kfac --lr 1 --damping 0.1 --opt-arg kl_clip=0.01 \\
      --steps 1000 --resume --out runs/ae   # continue the K-FAC run above

exit status: 0 all runs completed, 1 a run stopped on NaN/inf, 2 bad input."""

_DEFAULT_LOSS = {"autoencoder": "bernoulli", "classification": "softmax_ce",
                 "sequence": "bernoulli"}
_AUTOENCODER_HIDDEN = (128, 64, 32, 64, 128)
_CLASSIFIER_HIDDEN = (128,)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers`` (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "train",
        help="train an MLP with K-FAC and baselines (digits by default)",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("network and task")
    g.add_argument("--arch", metavar="SIZES|LAYERS",
                   help="MLP: FULL layer sizes, input first and output last, e.g. 64-128-64-32-64-128-64 "
                        "(default: from the data: d-128-64-32-64-128-d for the autoencoder, "
                        "d-128-C for classification). CNN/RNN: a layer string, layers joined by '-': "
                        "conv{OUT}k{K}[p{P}][s{S}], max{K}, avg{K}, flatten, rnn{H}, last, dense{OUT}, "
                        "e.g. conv16k3p1-max2-conv32k3p1-avg2-dense10 or rnn64-last-dense10 "
                        "(defaults: those two; rnn64-dense{C} for --task sequence)")
    g.add_argument("--model", choices=("mlp", "cnn", "rnn"),
                   help="network kind (default: mlp, or what a layer string in --arch says); cnn "
                        "views the data as 1xSxS images, rnn as S steps of S pixels")
    g.add_argument("--act", default="tanh",
                   help="hidden activation (identity, sigmoid, tanh, relu, softplus); the output "
                        "layer is linear. A comma list gives one per layer. Default: tanh")
    g.add_argument("--task", choices=("autoencoder", "classification", "sequence"),
                   default="autoencoder",
                   help="autoencoder (targets = inputs), classification (integer labels; per "
                        "step for an RNN without 'last' and labels (N, T)) or sequence (RNN: float "
                        "targets at every step; on the digits: predict the next row)")
    g.add_argument("--loss", help="bernoulli or mse for the autoencoder (default bernoulli), "
                                  "softmax_ce for classification (the default there)")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float64",
                   help="floating-point type of the weights, data and optimizer state "
                        "(default float64, in which --resume continues bit-for-bit)")
    g.add_argument("--seed", type=int, default=0,
                   help="seed of the initialization and of the mini-batch order (default 0)")

    o = p.add_argument_group("optimizers")
    o.add_argument("--optimizer", default="kfac", metavar="NAMES",
                   help="comma list (sgd, adam, diag_fisher, ngd, kfac, ekfac); several are "
                        "trained one after the other from the same initialization. Default kfac")
    per_optimizer = ("one value for every optimizer that has this setting, or per optimizer "
                     "as NAME=VALUE[,NAME=VALUE]")
    o.add_argument("--lr", metavar="VALUE",
                   help=f"learning rate: {per_optimizer}, e.g. --lr kfac=1,sgd=0.02,adam=1e-3 "
                        "(default: each optimizer's own)")
    o.add_argument("--momentum", metavar="VALUE",
                   help=f"momentum coefficient in [0, 1) (every optimizer but adam, which has "
                        f"--opt-arg beta1): {per_optimizer}, "
                        "e.g. --momentum sgd=0.9 (default: each optimizer's own)")
    o.add_argument("--damping", metavar="VALUE",
                   help=f"Tikhonov damping lambda >= 0 added to the curvature (kfac, ekfac, ngd, "
                        f"diag_fisher): {per_optimizer}, e.g. --damping kfac=0.1,ngd=1e-3 "
                        "(default: each optimizer's own)")
    o.add_argument("--opt-arg", action="append", default=[], metavar="[NAME:]KEY=VALUE",
                   help="any other optimizer hyperparameter, e.g. --opt-arg fisher=mc or "
                        "--opt-arg kfac:inverse_update_period=5 (repeatable)")

    t = p.add_argument_group("training")
    n = t.add_mutually_exclusive_group()
    n.add_argument("--steps", type=int, help="number of updates (default 100)")
    n.add_argument("--epochs", type=int, help="number of passes over the data")
    t.add_argument("--batch-size", type=int, default=100, help="mini-batch size (default 100)")
    t.add_argument("--eval-every", type=int,
                   help="evaluate the loss on the full training set every N steps "
                        "(default: 10 times per run)")
    t.add_argument("--threads", type=int, metavar="N",
                   help="use at most N BLAS/OpenMP threads (default: the libraries' own, "
                        "usually one per core); 1 is fastest for small networks and on a "
                        "machine shared with other jobs")
    t.add_argument("--workers", metavar="N",
                   help="split each batch of sgd and adam over N threads, blocks of at least "
                        "512 rows (geomkfac.nn.parallel; an integer or 'auto'; default: "
                        "GEOMKFAC_WORKERS, else 1); the sums' rounding depends on N")

    d = p.add_argument_group("data (default: the embedded 8x8 digits, pixels scaled to [0, 1])")
    d.add_argument("--data", metavar="PATH.npz", help=".npz file with X (N, d) and Y")
    d.add_argument("--idx-images", metavar="PATH", help="MNIST-style IDX images (raw or .gz)")
    d.add_argument("--idx-labels", metavar="PATH", help="MNIST-style IDX labels (raw or .gz)")

    f = p.add_argument_group("output")
    f.add_argument("--out", default="runs", metavar="DIR",
                   help="directory for metrics, checkpoints and loss.png (default ./runs); it "
                        "must be empty or new, unless --resume or --force")
    f.add_argument("--format", choices=("csv", "jsonl"), default="csv",
                   help="format of the metrics files: csv (one row per evaluation, default) or "
                        "jsonl (one JSON object per line)")
    f.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="also checkpoint every N steps (always at the end)")
    r = f.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_true",
                   help="continue each optimizer from its checkpoint in --out (same settings; "
                        "--steps/--epochs may be raised)")
    r.add_argument("--force", action="store_true",
                   help="write into a non-empty --out: first delete the files an earlier "
                        "`geomkfac train` wrote there (metrics-*, checkpoint-*, loss.png, for "
                        "every optimizer); other files are kept")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------- argument parsing


def parse_arch(text: str) -> list[int]:
    """``"64-128-10"`` -> ``[64, 128, 10]`` (ConfigurationError when malformed).

    >>> parse_arch("64-128-64")
    [64, 128, 64]
    """
    parts = [s.strip() for s in str(text).replace(",", "-").split("-")]
    try:
        sizes = [int(s) for s in parts]
    except ValueError:
        raise ConfigurationError(
            f"--arch {text!r} is not a list of layer sizes like 64-128-64-32-64-128-64"
        ) from None
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ConfigurationError(
            f"--arch {text!r}: need at least an input and an output width, all positive"
        )
    return sizes


def _parse_value(text: str):
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_hyper_values(flag: str, text: str | None, names: list[str]):
    """Parse ``--lr 0.1`` (global) or ``--lr sgd=0.1,adam=1e-3`` (per optimizer).

    Returns ``(global_value_or_None, {name: value})``.

    >>> parse_hyper_values("--lr", "sgd=0.1,adam=1e-3", ["sgd", "adam"])
    (None, {'sgd': 0.1, 'adam': 0.001})
    >>> parse_hyper_values("--lr", "0.5", ["sgd"])
    (0.5, {})
    """
    if text is None:
        return None, {}
    if "=" not in text:
        value = _parse_value(text)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigurationError(f"{flag} {text!r} is not a number")
        return value, {}
    per = {}
    for item in text.split(","):
        name, sep, val = item.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise ConfigurationError(
                f"{flag} {item!r}: expected NAME=VALUE with NAME one of the optimizers given "
                f"({', '.join(names)})"
            )
        value = _parse_value(val)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigurationError(f"{flag} {item!r}: {val!r} is not a number")
        per[name] = value
    return None, per


def parse_opt_args(items: list[str], names: list[str]):
    """Parse ``--opt-arg [NAME:]KEY=VALUE`` items into ``(global, {name: {key: value}})``.

    >>> parse_opt_args(["fisher=mc", "kfac:inverse_every=5"], ["kfac", "sgd"])
    ({'fisher': 'mc'}, {'kfac': {'inverse_every': 5}})
    """
    glob, per = {}, {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(f"--opt-arg {item!r}: expected KEY=VALUE or NAME:KEY=VALUE")
        name, colon, key = key.rpartition(":")
        key = key.strip().replace("-", "_")
        if colon:
            name = name.strip()
            if name not in names:
                raise ConfigurationError(
                    f"--opt-arg {item!r}: {name!r} is not one of the optimizers given "
                    f"({', '.join(names)})"
                )
            per.setdefault(name, {})[key] = _parse_value(val)
        else:
            glob[key] = _parse_value(val)
    return glob, per


def _accepted_keys(opt) -> set[str] | None:
    """Hyperparameter names an optimizer takes (its ``defaults``, else its constructor's
    keyword parameters; None: it takes any)."""
    defaults = getattr(type(opt), "defaults", None)
    if isinstance(defaults, dict) and defaults:
        return set(defaults)
    try:
        sig = inspect.signature(type(opt).__init__)
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n in sig.parameters if n not in ("self", "model", "loss")}


# --------------------------------------------------------------------------- the command


def _load_data(args, dtype):
    from geomkfac.nn import data as D

    sources = [s for s in (args.data, args.idx_images) if s]
    if len(sources) > 1:
        raise ConfigurationError("give either --data or --idx-images, not both")
    if args.idx_labels and not args.idx_images:
        raise ConfigurationError("--idx-labels needs --idx-images")
    if args.data:
        return D.load_npz(args.data, args.task, dtype)
    if args.idx_images:
        return D.load_idx_dataset(args.idx_images, args.idx_labels, args.task, dtype)
    return D.load_digits(args.task, dtype)


def _sizes_for(args, data) -> list[int]:
    if args.arch is None:
        hidden = _AUTOENCODER_HIDDEN if data.task == "autoencoder" else _CLASSIFIER_HIDDEN
        return [data.input_dim, *hidden, data.output_dim]
    sizes = parse_arch(args.arch)
    if sizes[0] != data.input_dim:
        raise DataError(
            f"--arch {args.arch} starts with input width {sizes[0]} but the data ({data.name}) "
            f"has {data.input_dim} features per example; --arch gives the full sizes, input first"
        )
    data.check_output_dim(sizes[-1])
    return sizes


def _model_kind(args) -> str:
    from geomkfac.nn.architectures import is_layer_string, parse_architecture

    if args.arch is not None and is_layer_string(args.arch):
        spec = parse_architecture(args.arch)
        inferred = "rnn" if any(k == "rnn" for k, _ in spec) else "cnn"
        if args.model not in (None, inferred):
            raise ConfigurationError(f"--model {args.model} does not match --arch {args.arch}")
        return inferred
    if args.model in ("cnn", "rnn") and args.arch is not None:
        raise ConfigurationError(
            f"--model {args.model} needs a layer string in --arch (e.g. "
            f"{'conv16k3p1-max2-dense10' if args.model == 'cnn' else 'rnn64-last-dense10'}), "
            f"got MLP sizes {args.arch}"
        )
    return args.model or "mlp"


def _shaped_model(args, kind, acts, dtype):
    """Data viewed as images / sequences and the Sequential model for ``--model cnn|rnn``."""
    from geomkfac.nn import data as D
    from geomkfac.nn import shaped
    from geomkfac.nn.architectures import build_model, default_architecture

    if args.task == "sequence" and kind != "rnn":
        raise ConfigurationError("--task sequence needs a recurrent model (--model rnn)")
    if args.data and args.idx_images:
        raise ConfigurationError("give either --data or --idx-images, not both")
    if args.idx_labels and not args.idx_images:
        raise ConfigurationError("--idx-labels needs --idx-images")
    if args.data:
        data = shaped.load_shaped_npz(args.data, args.task, dtype)
    else:
        if args.idx_images:  # the next-row task needs no labels
            flat_task = "autoencoder" if args.task == "sequence" else args.task
            data = D.load_idx_dataset(args.idx_images, args.idx_labels, flat_task, dtype)
        else:
            flat_task = "classification" if args.task == "sequence" else args.task
            data = D.load_digits(flat_task, dtype)
        if args.task == "sequence":
            data = shaped.next_row_task(data)
        else:
            data = (shaped.as_images if kind == "cnn" else shaped.as_sequences)(data)
    if data.task == "autoencoder" and kind == "rnn":
        raise ConfigurationError("an RNN autoencoder is not supported; use --task sequence")
    if data.task == "classification":
        C = int(data.num_classes)
    else:
        C = int(np.prod(data.Y.shape[2:] if data.task == "sequence" else data.Y.shape[1:]))
    seq_out = data.task == "sequence" or (data.task == "classification" and data.Y.ndim == 2)
    arch = args.arch or default_architecture(kind, C, sequence_output=seq_out)
    model = build_model(arch, data.X.shape[1:], acts, seed=args.seed, dtype=dtype)
    out = model.output_shape(data.X.shape[1:])
    if data.task == "classification":
        data.check_output_dim(out[-1])
    elif data.task == "autoencoder" and out != data.Y.shape[1:]:
        raise DataError(f"--arch {arch}: outputs {out} but the targets are {data.Y.shape[1:]}")
    return data, model, arch


def _hyper_for(names, args, probe):
    """Per-optimizer keyword arguments from --lr/--momentum/--damping/--opt-arg."""
    hyper = {n: {} for n in names}
    accepted = {n: probe(n) for n in names}
    glob_items = {}
    for flag, key in (("--lr", "lr"), ("--momentum", "momentum"), ("--damping", "damping")):
        g, per = parse_hyper_values(flag, getattr(args, key), names)
        for n, v in per.items():
            hyper[n][key] = v
        if g is not None:
            glob_items[key] = (flag, g)
    g, per = parse_opt_args(args.opt_arg, names)
    for n, kv in per.items():
        hyper[n].update(kv)
    for key, v in g.items():
        glob_items[key] = ("--opt-arg", v)
    for key, (flag, value) in glob_items.items():
        takers = [n for n in names if accepted[n] is None or key in accepted[n]]
        if not takers:
            raise ConfigurationError(
                f"{flag}: no optimizer among {', '.join(names)} has a hyperparameter {key!r}"
            )
        if len(names) == 1:
            takers = names  # a single optimizer gets it and says itself if it is wrong
        for n in takers:
            hyper[n].setdefault(key, value)
    return hyper


def _check_out_dir(out: str) -> None:
    """Create ``--out`` (or check it) before any work: ConfigurationError if it cannot hold
    the run's files."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"--out {out}: cannot create the output directory ({exc.strerror or exc}); "
            "give a writable directory"
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigurationError(f"--out {out}: the directory is not writable; give a writable one")


#: the files ``geomkfac train`` writes into ``--out`` (and its temporary files)
_RUN_FILE = re.compile(r"(metrics-\w+\.(csv|jsonl)|checkpoint-\w+\.npz(\.prev)?|loss\.png"
                       r"|\.(checkpoint|metrics)-\w+\..*\.tmp)")


def _prepare_out_dir(out: str, resume: bool, force: bool) -> list[str]:
    """Refuse a non-empty ``--out`` unless ``resume`` or ``force``; with ``force`` delete the
    files an earlier run wrote there (every optimizer's, so none is left stale). Returns the
    names of the deleted files."""
    entries = sorted(os.listdir(out))
    if not entries or resume:
        return []
    if not force:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise ConfigurationError(
            f"--out {out} is not empty ({shown}); give a new or empty directory, --resume to "
            "continue the runs saved there, or --force to replace an earlier run's files"
        )
    removed = []
    for name in entries:
        path = os.path.join(out, name)
        if _RUN_FILE.fullmatch(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def _summary_table(rows) -> str:
    head = ("optimizer", "status", "final loss", "steps", "seconds")
    body = [(r.name, r.status, "-" if r.final_loss is None else f"{r.final_loss:.6g}",
             str(r.steps), f"{r.seconds:.2f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(b) for b in body)])


def run(args) -> int:
    """Execute ``geomkfac train`` for parsed ``args``; returns the exit code (0 when every
    optimizer completed, 1 when one stopped on a non-finite value)."""
    from geomkfac.nn.activations import get_activation
    from geomkfac.nn.losses import get_loss, loss_for_model
    from geomkfac.nn.model import MLP
    from geomkfac.nn.optim import get_optimizer
    from geomkfac.nn.plots import plot_loss_curves
    from geomkfac.nn.train import read_metrics, train

    dtype = np.dtype(args.dtype)
    names = [n.strip().lower() for n in args.optimizer.split(",") if n.strip()]
    if not names:
        raise ConfigurationError("--optimizer needs at least one name")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"--optimizer lists a name twice: {args.optimizer}")
    for flag in ("steps", "epochs", "batch_size", "checkpoint_every", "eval_every"):
        v = getattr(args, flag)
        if v is not None and v < (0 if flag == "steps" else 1):
            raise ConfigurationError(f"--{flag.replace('_', '-')} must be positive, got {v}")
    if args.seed < 0:
        raise ConfigurationError(f"--seed must be a non-negative integer, got {args.seed}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigurationError(f"--threads must be a positive integer, got {args.threads}")
        from geomkfac.threads import limit_blas_threads

        limit_blas_threads(args.threads)
    from geomkfac.memory import ensure_default as keep_memory_default
    from geomkfac.nn.kernels import jit_active
    from geomkfac.nn.parallel import set_workers, workers

    if args.workers is not None:
        set_workers(args.workers)
    # the settings a first step would read from the environment, checked before any file is
    # written: each raises ConfigurationError on a value it does not understand
    workers()  # GEOMKFAC_WORKERS
    jit_active()  # GEOMKFAC_JIT
    keep_memory_default()  # GEOMKFAC_KEEP_FREED_MEMORY
    _check_out_dir(args.out)
    loss_name = args.loss or _DEFAULT_LOSS[args.task]
    loss = get_loss(loss_name)
    if args.task == "classification" and loss.name not in ("softmax_ce",):
        raise ConfigurationError(
            f"--loss {loss_name}: classification uses integer labels and softmax_ce"
        )
    if args.task == "autoencoder" and loss.name == "softmax_ce":
        raise ConfigurationError("--loss softmax_ce needs --task classification")
    acts = [a.strip() for a in args.act.split(",")] if "," in args.act else args.act
    for a in ([acts] if isinstance(acts, str) else acts):
        get_activation(a)  # unknown names -> ConfigurationError listing the known ones

    kind = _model_kind(args)
    if kind == "mlp":
        if args.task == "sequence":
            raise ConfigurationError("--task sequence needs a recurrent model (--model rnn)")
        data = _load_data(args, dtype)
        sizes = _sizes_for(args, data)
        if isinstance(acts, list) and len(acts) != len(sizes) - 1:
            raise ConfigurationError(
                f"--act lists {len(acts)} activations but --arch has {len(sizes) - 1} layers"
            )
        loss.check_targets(data.Y, sizes[-1])
        init = MLP(sizes, acts, seed=args.seed, dtype=dtype)
    else:
        data, init, sizes = _shaped_model(args, kind, acts, dtype)
        loss = loss_for_model(init, loss)
        loss.check_targets(data.Y, init.output_shape(data.X.shape[1:])[-1], data.X.shape[0])

    def probe(name):
        return _accepted_keys(get_optimizer(name, init.copy(), loss))

    hyper = _hyper_for(names, args, probe)
    removed = _prepare_out_dir(args.out, args.resume, args.force)
    if removed:
        print(f"geomkfac train: --force: deleted {len(removed)} file(s) of an earlier run in "
              f"{args.out}: {', '.join(removed)}", file=sys.stderr)
    steps = args.steps if (args.steps is not None or args.epochs is not None) else 100
    out = args.out
    ext = "jsonl" if args.format == "jsonl" else "csv"
    results, histories = [], {}
    for name in names:
        model = init.copy()
        opt = get_optimizer(name, model, loss, **hyper[name])
        config = {
            "arch": sizes, "act": acts, "task": args.task, "loss": loss.name,
            "dtype": dtype.name, "seed": args.seed, "batch_size": args.batch_size,
            "data": data.name, "optimizer": name, "hyper": hyper[name],
            "steps": steps, "epochs": args.epochs,
        }
        metrics_path = os.path.join(out, f"metrics-{name}.{ext}")
        res = train(
            model, opt, data, steps=steps, epochs=args.epochs, batch_size=args.batch_size,
            seed=args.seed, loss=loss, name=name, eval_every=args.eval_every,
            metrics_path=metrics_path, metrics_format=args.format,
            checkpoint_path=os.path.join(out, f"checkpoint-{name}.npz"),
            checkpoint_every=args.checkpoint_every, resume=args.resume, config=config,
            progress=False if args.no_progress else None,
        )
        results.append(res)
        histories[name] = read_metrics(metrics_path, args.format)
        if not res.ok:
            print(f"geomkfac train: {res.message}", file=sys.stderr)
    plot = os.path.join(out, "loss.png")
    if any(histories.values()):
        arch = sizes if isinstance(sizes, str) else "-".join(map(str, sizes))
        plot_loss_curves(histories, plot, title=f"{data.name} {args.task} {arch}")
    print(_summary_table(results))
    print(f"metrics, checkpoints and loss.png in {out}")
    return 0 if all(r.ok for r in results) else 1
