#!/usr/bin/env python3
"""Table 2h: how much of one round's update a top-k codec can keep, for the chunk shapes and bases issue 16
names (the codec's 4,096-value chunks, 64-value chunks, a DCT-II of each 64-value block as in DeMo, one
chunk per rank-1 LoRA component, one global top-k), against i.i.d. Gaussian values.

Reads the merged checkpoints of a finished run (`<data dir>/checkpoints/<round>/adapter_model.safetensors`)
and measures, for each committed round r, the share of the energy (sum of squares) of the update
checkpoint(r) - checkpoint(r - 1) that the k largest values of each chunk hold, k = ceil(density x chunk
length) as in `hearth_proto::codec`. Needs numpy.

    python3 tests/bench/2h-energy.py DATA_DIR [LABEL] > docs/bench/2-communication-energy.md

DATA_DIR is a coordinator's data directory, e.g. the `run/data` of `hearth-coordinator demo --dir D`.
"""
import json
import os
import struct
import sys

import numpy as np

DENSITIES = (1 / 4, 1 / 16, 1 / 64)
SHAPES = ("chunks of 4,096 (the codec's)", "chunks of 64", "DCT-II of each 64-value block",
          "one chunk per rank-1 component", "one global top-k")


def load(path):
    """The f32 tensors of a safetensors file, by name."""
    with open(path, "rb") as fh:
        raw = fh.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {meta['dtype']}, expected F32")
        start, end = meta["data_offsets"]
        out[name] = np.frombuffer(raw[8 + n + start:8 + n + end], dtype=np.float32).reshape(meta["shape"])
    return out


def dct_matrix(n):
    """The orthonormal DCT-II matrix of size n."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    m[0] *= np.sqrt(1 / n)
    m[1:] *= np.sqrt(2 / n)
    return m


DCT64 = dct_matrix(64)


def kept(rows, density):
    """Energy of the top ceil(density x len) values of each row (a list of 1-D arrays)."""
    total = 0.0
    for r in rows:
        k = max(1, int(np.ceil(len(r) * density - 1e-6)))
        sq = np.sort(r * r)[::-1]
        total += float(sq[:k].sum())
    return total


def chunks(flat, size):
    return [flat[i:i + size] for i in range(0, len(flat), size)]


def dct_blocks(flat):
    whole = len(flat) // 64 * 64
    out = list((flat[:whole].reshape(-1, 64) @ DCT64.T))
    if whole < len(flat):
        out.append(flat[whole:])
    return out


def shares(update, density):
    """Share of the update's energy each shape keeps at this density."""
    total = 0.0
    got = dict.fromkeys(SHAPES, 0.0)
    for name, d in update.items():
        flat = d.ravel()
        total += float((flat * flat).sum())
        got[SHAPES[0]] += kept(chunks(flat, 4096), density)
        got[SHAPES[1]] += kept(chunks(flat, 64), density)
        got[SHAPES[2]] += kept(dct_blocks(flat), density)
        # lora_B is [out, r]: a rank-1 component is a column; lora_A is [r, in]: a row.
        comps = d.T if "lora_B" in name else d
        got[SHAPES[3]] += kept(list(comps), density)
        got[SHAPES[4]] += kept([flat], density)
    return {k: v / total for k, v in got.items()} if total > 0 else None


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    data = sys.argv[1]
    label = sys.argv[2] if len(sys.argv) > 2 else data
    ckpt = os.path.join(data, "checkpoints")
    rounds = sorted(int(r) for r in os.listdir(ckpt) if r.isdigit())
    prev = load(os.path.join(ckpt, str(rounds[0]), "adapter_model.safetensors"))
    per_round = []
    for r in rounds[1:]:
        cur = load(os.path.join(ckpt, str(r), "adapter_model.safetensors"))
        update = {k: cur[k].astype(np.float64) - prev[k].astype(np.float64) for k in cur}
        prev = cur
        row = {dens: shares(update, dens) for dens in DENSITIES}
        if row[DENSITIES[0]] is not None:
            per_round.append((r, row))
    gauss = np.random.default_rng(0).standard_normal(1 << 20)
    gshare = {dens: kept(chunks(gauss, 4096), dens) / float((gauss * gauss).sum()) for dens in DENSITIES}

    print("# 2h. How much of a round's update top-k can keep\n")
    print(f"Run: {label}. `python3 tests/bench/2h-energy.py DATA_DIR`: for each committed round, the share of the "
          "energy (sum of squares) of the merged update checkpoint(r) − checkpoint(r − 1) that the largest "
          "ceil(density × length) values of each chunk hold, for each chunk shape or basis issue 16 names. "
          "The last column is the same for i.i.d. Gaussian values: a share near it means the update has no "
          "sparse structure for top-k to find in that basis. The merged update (the outer step, momentum "
          "included) stands in for the workers' own deltas, which the coordinator keeps only encoded.\n")
    rounds_shown = [r for r, _ in per_round]
    for dens in DENSITIES:
        print(f"\n**Density 1/{round(1 / dens)}** (share of the energy kept, %)\n")
        print("| round | " + " | ".join(SHAPES) + " | Gaussian |")
        print("| ---: | " + " | ".join("---:" for _ in SHAPES) + " | ---: |")
        for r, row in per_round:
            s = row[dens]
            print(f"| {r} | " + " | ".join(f"{s[k] * 100:.1f}" for k in SHAPES) + f" | {gshare[dens] * 100:.1f} |")
        later = [row[dens] for r, row in per_round if r > 1]
        if later:
            mean = {k: sum(s[k] for s in later) / len(later) for k in SHAPES}
            print(f"| mean of rounds {rounds_shown[1] if len(rounds_shown) > 1 else '-'}–{rounds_shown[-1]} | "
                  + " | ".join(f"{mean[k] * 100:.1f}" for k in SHAPES) + f" | {gshare[dens] * 100:.1f} |")
    later = [row for r, row in per_round if r > 1]
    if later:
        print("\nReading: after round 1, the best shape or basis keeps, on average, "
              + "; ".join(
                  f"{max(sum(row[d][k] for row in later) / len(later) for k in SHAPES) * 100:.1f} % at 1/{round(1 / d)} "
                  f"(Gaussian values: {gshare[d] * 100:.1f} %)" for d in DENSITIES)
              + ". A share this close to the Gaussian one means the update's energy is spread over its values "
              "like noise, in every basis tried: a top-k codec at 1/16 sends about a third of each round's "
              "update and leaves the rest to error feedback, a round or more late.")


if __name__ == "__main__":
    main()
