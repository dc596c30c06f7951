"""Make the quantizer fixtures under tests/fixtures/quant/ with llama.cpp itself (the oracle).

    python tests/make_quant_fixtures.py [TYPE ...]      (default: every type in TYPES)

Needs llama-cpp-python (its libggml-base provides ggml_quantize_chunk; see llamacpp_quant.py). Seeds are fixed,
so a rerun with the same llama.cpp writes the same files. Written:
- inputs.npz: float32 row sets "r256" (2 x 256), "r512" (8 x 512), "r2816" (2 x 2816), each with a matching
  importance matrix "<set>_imatrix" (one positive weight per column, a few zeros, as llama.cpp's imatrix has);
- <TYPE>.npz for every type in TYPES: the bytes llama.cpp writes for each set, without ("<set>") and with
  ("<set>_imatrix") the importance matrix; IMATRIX_ONLY types only with it (llama.cpp aborts without one).
"""
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "quant")
sys.path.insert(0, HERE)

TYPES = ("F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "TQ1_0",
         "TQ2_0", "IQ4_NL", "IQ4_XS", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S")
IMATRIX_ONLY = ("IQ1_S", "IQ2_XXS", "IQ2_XS")


def make_inputs(seed: int = 20240601) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    r512 = np.empty((8, 512), dtype=np.float32)
    r512[0] = rng.standard_normal(512)  # plain
    r512[1] = rng.standard_normal(512) * 0.02
    r512[1, rng.choice(512, 6, replace=False)] *= 80  # outliers
    r512[2] = 0  # all zero
    r512[3] = 0.3125  # constant
    r512[4] = rng.standard_normal(512) * 1e-6  # tiny: fp16 scales underflow to subnormals
    r512[5] = rng.uniform(0.5, 2.0, 512)  # all positive, offset
    r512[6] = rng.laplace(size=512) * 3e3  # large, heavy-tailed
    r512[7] = np.round(rng.uniform(-1.5, 1.5, 512)) * 0.05  # ternary values
    r512[7, 32:64] = 0  # one zero block inside a row
    r256 = (rng.standard_normal((2, 256)) * np.array([[1.0], [1e-4]])).astype(np.float32)
    r256[1, :16] = -5e-3  # a constant sub-block next to tiny ones
    r2816 = (rng.standard_t(4, (2, 2816)) * 0.05).astype(np.float32)
    out = {"r256": r256, "r512": r512, "r2816": r2816}
    for name, x in list(out.items()):
        im = (rng.lognormal(0.0, 1.5, x.shape[1]) ** 2).astype(np.float32)
        im[rng.random(x.shape[1]) < 0.02] = 0.0
        out[name + "_imatrix"] = im
    return out


def main() -> None:
    from llamacpp_quant import llamacpp_quantize

    os.makedirs(OUT, exist_ok=True)
    inputs = make_inputs()
    np.savez_compressed(os.path.join(OUT, "inputs.npz"), **inputs)
    sets = [k for k in inputs if not k.endswith("_imatrix")]
    for t in sys.argv[1:] or TYPES:
        expected = {}
        for s in sets:
            if t not in IMATRIX_ONLY:
                expected[s] = llamacpp_quantize(inputs[s], t)
            expected[s + "_imatrix"] = llamacpp_quantize(inputs[s], t, inputs[s + "_imatrix"])
        np.savez_compressed(os.path.join(OUT, f"{t}.npz"), **expected)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(sys.argv[1:] or TYPES) + 1} files, {total / 1024:.0f} KiB, to {OUT}")


if __name__ == "__main__":
    main()
