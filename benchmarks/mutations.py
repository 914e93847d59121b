"""Mutation run: plant plausible one-line bugs in the core and the pipeline, and check that
``geomkfac prove`` turns red — and that the proof of the statement each bug breaks is among
the rows that fail.

Each mutation replaces one exact snippet (which must occur exactly once) in a copy of
``geomkfac/`` and ``proofs/`` in a temporary folder; ``python -m geomkfac.cli prove --fast``
runs there against the mutated package.  Nothing in the checkout is modified.

Usage::

    python benchmarks/mutations.py [--jobs 2] [--only NAME ...] [--json benchmarks/results/mutations.json]

Prints one line per mutation (caught or not, by which rows, whether the expected row is
among them) and the totals; exits 1 if a mutation was not caught or was caught only by
rows other than the statement it breaks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    kind: str  # what kind of law it breaks
    path: str  # file, relative to the repository root
    old: str
    new: str
    expected: tuple[str, ...]  # proof ids of the statements it breaks (any one must fail)


M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # ------------------------------------------------------------ transformation laws (spaces)
    M("point law: y = B x − c", "transformation law", "geomkfac/spaces.py",
      "        return field.matmul(B, x) + c\n", "        return field.matmul(B, x) - c\n",
      ("B.1", "C.1/C.2", "B.3 composition")),
    M("vector moved like a point", "transformation law", "geomkfac/spaces.py",
      "        B, _ = self._in(field)\n        return field.matmul(B, v)\n",
      "        B, c = self._in(field)\n        return field.matmul(B, v) + c\n",
      ("C.1/C.2",)),
    M("covector law B⁻¹ instead of B⁻ᵀ", "transformation law", "geomkfac/spaces.py",
      "        return field.matmul(field.transpose(Binv), w)\n", "        return field.matmul(Binv, w)\n",
      ("B.3 covectors",)),
    M("inverse change keeps c", "frame composition", "geomkfac/spaces.py",
      "                    -self.field.matmul(Binv, self._c),\n", "                    -self._c,\n",
      ("B.3 composition",)),
    M("composition B₁ B₂", "frame composition", "geomkfac/spaces.py",
      "field.matmul(B2, B1), field.matmul(B2, c1) + c2", "field.matmul(B1, B2), field.matmul(B2, c1) + c2",
      ("B.3 composition",)),
    M("composition translation B₁ c₂ + c₁", "frame composition", "geomkfac/spaces.py",
      "field.matmul(B2, B1), field.matmul(B2, c1) + c2", "field.matmul(B2, B1), field.matmul(B1, c2) + c1",
      ("B.3 composition",)),
    M("product frame: translations reversed", "translation order", "geomkfac/spaces.py",
      "        c = field.concat([field.asvector(ch.c) for ch in changes])\n",
      "        c = field.concat([field.asvector(ch.c) for ch in reversed(changes)])\n",
      ("B.1", "B.2")),
    M("stacked homogeneous: blocks reversed", "translation order", "geomkfac/spaces.py",
      "        return field.block_diag([field.asmatrix(ch.homogeneous()) for ch in changes])\n",
      "        return field.block_diag([field.asmatrix(ch.homogeneous()) for ch in reversed(changes)])\n",
      ("B.1",)),
    # ------------------------------------------------------------ maps
    M("evaluation map row-stacking I ⊗ āᵀ", "vec order", "geomkfac/maps.py",
      "J = field.kron(field.transpose(field.column(abar)), field.eye(self._codomain.dim))",
      "J = field.kron(field.eye(self._codomain.dim), field.transpose(field.column(abar)))",
      ("Lemma E.1",)),
    M("evaluation map drops the homogeneous 1", "dropped homogeneous coordinate", "geomkfac/maps.py",
      "        abar = field.concat([x, field.ones(1)])\n", "        abar = field.concat([x, field.zeros(1)])\n",
      ("Lemma E.1", "Prop 3.5")),
    M("induced frame kron(B_Z, [B_A]_H⁻ᵀ)", "Kronecker order", "geomkfac/maps.py",
      "        B = field.kron(field.transpose(HA_inv), BZ)\n", "        B = field.kron(BZ, field.transpose(HA_inv))\n",
      ("D.2/D.3", "Prop 3.5")),
    M("induced frame without the transpose", "transformation law", "geomkfac/maps.py",
      "        B = field.kron(field.transpose(HA_inv), BZ)\n", "        B = field.kron(HA_inv, BZ)\n",
      ("D.2/D.3", "Prop 3.5")),
    M("D.2 offset sign", "transformation law", "geomkfac/maps.py",
      "            b = b + field.matmul(W, field.asvector(inv.c))\n",
      "            b = b - field.matmul(W, field.asvector(inv.c))\n",
      ("D.2/D.3",)),
    M("D.2 output offset moved like a vector", "transformation law", "geomkfac/maps.py",
      "            b = chZ.apply_point(b)\n", "            b = chZ.apply_vector(b)\n",
      ("D.2/D.3",)),
    M("Jacobian law J B instead of J B⁻¹", "pullback", "geomkfac/maps.py",
      "        J = field.matmul(J, field.asmatrix(chA.B_inv))\n", "        J = field.matmul(J, field.asmatrix(chA.B))\n",
      ("B.4",)),
    # ------------------------------------------------------------ metrics
    M("metric law Bᵀ G B", "transformation law", "geomkfac/metrics.py",
      "        Binv = field.asmatrix(ch.B_inv)\n        out = field.matmul(field.transpose(Binv), field.matmul(G, Binv))\n",
      "        Binv = field.asmatrix(ch.B)\n        out = field.matmul(field.transpose(Binv), field.matmul(G, Binv))\n",
      ("B.4", "B.5 sharp", "Thm 3.2")),
    M("pullback: Jacobian into the map's frame, G in the metric's", "pullback", "geomkfac/metrics.py",
      "        J = phi.jacobian(at, frame, g_at.frame)\n", "        J = phi.jacobian(at, frame)\n",
      ("B.4", "Lemma E.1")),
    M("second moment law with [B]_H⁻¹", "transformation law", "geomkfac/metrics.py",
      "        H = field.asmatrix(ch.homogeneous())\n", "        H = field.asmatrix(ch.inverse().homogeneous())\n",
      ("Prop 3.5",)),
    M("second moment: outer of the mean", "mean of outer vs outer of mean", "geomkfac/metrics.py",
      "        M = (Xb * w[:, None]).T @ Xb\n", "        M = np.outer(w @ Xb, w @ Xb)\n",
      ("Prop 3.5", "Thm 3.4")),
    M("Kronecker metric kron(G, A)", "Kronecker order", "geomkfac/metrics.py",
      "            return field.kron(field.asmatrix(A), field.asmatrix(G))\n",
      "            return field.kron(field.asmatrix(G), field.asmatrix(A))\n",
      ("Prop 3.5",)),
    M("Kronecker sharp with G instead of G⁻¹", "g instead of g⁻¹", "geomkfac/metrics.py",
      "            X = field.solve(field.asmatrix(G), V)  # G⁻¹ V\n",
      "            X = field.matmul(field.asmatrix(G), V)  # G⁻¹ V\n",
      ("B.5 sharp", "Thm 3.2")),
    M("sharp with g instead of g⁻¹", "g instead of g⁻¹", "geomkfac/metrics.py",
      "            v = field.solve(field.asmatrix(G), field.asvector(w))\n",
      "            v = field.matmul(field.asmatrix(G), field.asvector(w))\n",
      ("B.5 sharp", "Thm 3.2", "§2.1")),
    M("sharp reads G in the metric's own frame", "transformation law", "geomkfac/metrics.py",
      "        w = covector.coords(F)\n        G = self.matrix(F)\n",
      "        w = covector.coords(F)\n        G = self.matrix(self._frame)\n",
      ("B.5 sharp",)),
    M("expectation sums instead of averaging", "pipeline", "geomkfac/metrics.py",
      "    return Metric(F, np.tensordot(w, np.stack(mats), axes=1), check=False)\n",
      "    return Metric(F, np.tensordot(w, np.stack(mats), axes=1) * len(mats), check=False)\n",
      ("Prop 3.5", "Ex. 3.3")),
    # ------------------------------------------------------------ output metrics
    M("Bernoulli Fisher p instead of p(1 − p)", "output metric", "geomkfac/output_metrics.py",
      "        return (p * (1.0 - p))[:, :, None] * np.eye(z.shape[1])[None]\n",
      "        return p[:, :, None] * np.eye(z.shape[1])[None]\n",
      ("Ex. 3.3",)),
    M("categorical Fisher diag(p) only", "output metric", "geomkfac/output_metrics.py",
      "        return p[:, :, None] * np.eye(z.shape[1])[None] - p[:, :, None] * p[:, None, :]\n",
      "        return p[:, :, None] * np.eye(z.shape[1])[None]\n",
      ("Ex. 3.3",)),
    # ------------------------------------------------------------ D.3, frames of the network
    M("D.3 dropped (base activation in every frame)", "dropped D.3", "geomkfac/networks/mlp.py",
      "        return ConjugatedActivation(base, chA.B, chA.c, chZ.B, chZ.c)\n",
      "        return base\n",
      ("D.2/D.3",)),
    M("Z frame shift sign", "transformation law", "geomkfac/networks/mlp.py",
      "                shift = -field.matmul(Pinv, field.asvector(t))\n",
      "                shift = field.matmul(Pinv, field.asvector(t))\n",
      ("D.2/D.3",)),
    M("conjugated activation drops γ", "dropped D.3", "geomkfac/activations_sym.py",
      "        return self.base._num(z @ P.T + t) @ O.T + g\n", "        return self.base._num(z @ P.T + t) @ O.T\n",
      ("D.2/D.3",)),
    M("conjugated activation Jacobian Ω J Φ → Φ J Ω", "transformation law", "geomkfac/activations_sym.py",
      "        return O[None] @ inner @ P[None]\n", "        return P[None] @ inner @ O[None]\n",
      ("Prop 3.5", "Thm 3.2")),
    # ------------------------------------------------------------ pipeline
    M("pipeline: the input read as coordinates in the input frame of κ", "pipeline", "geomkfac/networks/mlp.py",
      "        a = Point(net.A[0].reference_frame, x)\n", "        a = Point(frames.A[0], x)\n",
      ("Prop 3.5", "Thm 3.2")),
    M("pipeline: output differential read in the output frame as if reference", "pipeline", "geomkfac/kfac.py",
      "        out.append(Covector(ref, loss.grad(s.output.coords(ref), y)))\n",
      "        out.append(Covector(ref, loss.grad(s.output.coords(), y)))\n",
      ("Thm 3.2",)),
    M("pipeline: mean of differentials is a sum", "pipeline", "geomkfac/pipeline.py",
      "        w = [field.scalar(1) / n if field.symbolic else 1.0 / n] * n\n",
      "        w = [field.scalar(1) if field.symbolic else 1.0] * n\n",
      ("Thm 2.1",)),
    M("pipeline: the weights' coordinates relabelled instead of transformed", "pipeline", "geomkfac/kfac.py",
      "    return weights if weights.frame is F else Point(F, weights.coords(F))\n",
      "    return weights if weights.frame is F else Point(F, weights.coords())\n",
      ("Thm 3.2",)),
    M("pipeline: pullbacks linearized at the first example", "pipeline", "geomkfac/pipeline.py",
      "    E = expectation([Pullback(g, phi, at=z) for g, phi, z in zip(gs, rests, zetas)], weights)\n",
      "    E = expectation([Pullback(g, phi, at=zetas[0]) for g, phi in zip(gs, rests)], weights)\n",
      ("Prop 3.5",)),
    # ------------------------------------------------------------ convolution and recurrent pipelines
    M("conv: the border padded with zeros in every frame", "transformation law", "geomkfac/networks/conv.py",
      "            pad = self.padding_point(rec.a_in).coords(fA)\n", "            pad = np.zeros(fA.space.dim)\n",
      ("F.4", "Thm 4.1")),
    M("conv: the |T| scale dropped", "pipeline", "geomkfac/networks/conv_kfac.py",
      "    return independence_metric(alphas, rests, zetas, gs, scale=S.T)\n",
      "    return independence_metric(alphas, rests, zetas, gs)\n",
      ("Eqn. 4.4/F.5",)),
    M("rnn: the scale T dropped", "pipeline", "geomkfac/networks/rnn_kfac.py",
      "    scale = net.scales.layer(layer) if scaled else 1\n", "    scale = 1\n",
      ("Eqn. 4.7/G.3",)),
    M("rnn: (state, input) in the wrong order", "vec order", "geomkfac/networks/rnn_kfac.py",
      "        alpha = Point(frames.AX, field.concat([field.asvector(h), field.asvector(x)]))\n",
      "        alpha = Point(frames.AX, field.concat([field.asvector(x), field.asvector(h)]))\n",
      ("Eqn. 4.7/G.3",)),
)


_ROW = re.compile(r"^(?P<id>\S(?:\S| (?! ))*?)\s{2,}.*?\s{2,}(?:symbolic\+numeric|symbolic|numeric)\s{2,}"
                  r"(?P<result>holds|FAILS|ERROR)\s{2,}\S+\s{2,}(?P<neg>fails|DID NOT FAIL|ERROR|—)")


def failing_rows(table: str) -> list[str]:
    """Ids of the rows of a ``geomkfac prove`` table that do not pass."""
    out = []
    for line in table.splitlines():
        m = _ROW.match(line)
        if m and (m["result"] != "holds" or m["neg"] != "fails"):
            out.append(m["id"])
    return out


def apply(root: Path, mut: Mutation) -> None:
    path = root / mut.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mut.old)
    if count != 1:
        raise SystemExit(f"mutation {mut.name!r}: the snippet occurs {count} times in {mut.path} (need 1)")
    path.write_text(text.replace(mut.old, mut.new), encoding="utf-8")


def run_one(mut: Mutation, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="mut-") as tmp:
        tmp = Path(tmp)
        for d in ("geomkfac", "proofs"):
            shutil.copytree(ROOT / d, tmp / d, ignore=shutil.ignore_patterns("__pycache__"))
        apply(tmp, mut)
        env = dict(os.environ, PYTHONPATH=str(tmp), OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "geomkfac.cli", "prove", "--fast", "--quiet",
                                   "--dir", str(tmp / "proofs")], cwd=tmp, env=env, capture_output=True,
                                  text=True, timeout=timeout)
            rc, out = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired:
            rc, out = -1, ""
        rows = failing_rows(out)
        return {"name": mut.name, "kind": mut.kind, "file": mut.path, "exit": rc,
                "caught": rc != 0, "rows": rows, "expected": list(mut.expected),
                "by_its_statement": any(e in rows for e in mut.expected),
                "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="names (substrings) of mutations to run")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--json", default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    muts = [m for m in MUTATIONS if not args.only or any(s in m.name for s in args.only)]
    for m in muts:  # every snippet must be found before anything runs
        text = (ROOT / m.path).read_text(encoding="utf-8")
        if text.count(m.old) != 1:
            raise SystemExit(f"mutation {m.name!r}: the snippet occurs {text.count(m.old)} times in {m.path}")
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda m: run_one(m, args.timeout), muts))
    for r in results:
        mark = "caught" if r["caught"] else "MISSED"
        by = "by its statement" if r["by_its_statement"] else f"NOT by {', '.join(r['expected'])}"
        print(f"{mark:6}  {r['name']:<68} rows: {', '.join(r['rows']) or '—'}  ({by})")
    caught = sum(r["caught"] for r in results)
    own = sum(r["caught"] and r["by_its_statement"] for r in results)
    print(f"\n{caught}/{len(results)} mutations make `geomkfac prove --fast` exit non-zero; "
          f"{own}/{len(results)} are caught by the proof of the statement they break")
    if args.json:
        Path(args.json).write_text(json.dumps({"caught": caught, "by_its_statement": own,
                                               "total": len(results), "mutations": results}, indent=1))
    return 0 if own == len(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
