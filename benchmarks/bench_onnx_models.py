"""Speed of the PyTorch ports of the ONNX recognition models vs onnxruntime (CPU, 1 thread).

Usage::

    .venv/bin/python benchmarks/bench_onnx_models.py [--n 64] [--threads 1]

Prints a Markdown table: images/s of ``torch_module()`` forward (batch 32, inference mode), of the
same with a backward pass to the pixels (what attacks pay), and of onnxruntime (batch 32 where the
ONNX file allows it, else batch 1).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64, help="images per measurement (default 64)")
    ap.add_argument("--threads", type=int, default=1, help="torch / onnxruntime threads (default 1)")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from facepriv.artifacts import fetch
    from facepriv.models.zoo import get_model

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(0, 1, size=(args.n, 3, 112, 112)).astype(np.float32))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = args.threads
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, threads {args.threads}, n {args.n}\n")
    print("| model | torch fwd img/s | torch fwd+bwd img/s | onnxruntime img/s (batch) |")
    print("|---|---|---|---|")
    for name in ("sface", "mobilefacenet", "edgeface"):
        model = get_model(name)
        net = model.torch_module()
        with torch.inference_mode():
            net(x[:2])
            t = time.perf_counter()
            for i in range(0, args.n, 32):
                net(x[i : i + 32])
            fwd = args.n / (time.perf_counter() - t)
        t = time.perf_counter()
        for i in range(0, args.n, 32):
            xb = x[i : i + 32].clone().requires_grad_(True)
            net(xb).sum().backward()
        bwd = args.n / (time.perf_counter() - t)
        sess = ort.InferenceSession(str(fetch(model.artifact_key)), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        # EdgeFace declares a symbolic batch but its Reshape constants were traced with batch 1
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else 1 if name == "edgeface" else 32
        xn = np.ascontiguousarray(net.normalise(x).numpy())
        sess.run(None, {inp.name: xn[:batch]})
        t = time.perf_counter()
        for i in range(0, args.n, batch):
            sess.run(None, {inp.name: xn[i : i + batch]})
        ortr = args.n / (time.perf_counter() - t)
        print(f"| {name} | {fwd:.1f} | {bwd:.1f} | {ortr:.1f} ({batch}) |")


if __name__ == "__main__":
    main()
