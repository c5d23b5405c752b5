"""What the driver hands a fresh Ray worker unpickles there, whatever that worker imported first (CI failure:
"operator torchvision::nms does not exist" in a decode task)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
from PIL import Image

from neardup.extract.registry import create_extractor
from neardup.scaleout.extract import Portable, decode_batches, unpack

#: a fresh interpreter, as a new Ray worker is: it unpickles stdin and applies it to a grey 64x48 image
FRESH = ("import pickle, sys\n"
         "from PIL import Image\n"
         "t = pickle.loads(sys.stdin.buffer.read())\n"
         "x = t(Image.new('RGB', (64, 48), (90, 120, 150)))\n"
         "print(tuple(x.shape), round(float(x.mean()), 4))\n")


def test_a_wrapped_transform_unpickles_in_a_process_that_never_imported_neardup():
    ext = create_extractor("neardup_cd", input_size=96, engine="torch")
    blob = pickle.dumps(Portable(ext.transform))
    assert b"torchvision" not in blob.split(b"_restore")[0]  # the stream opens with neardup's loader
    run = subprocess.run([sys.executable, "-c", FRESH], input=blob, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    want = ext.transform(Image.new("RGB", (64, 48), (90, 120, 150)))
    assert run.stdout.decode().strip() == f"{tuple(want.shape)} {round(float(want.mean()), 4)}"


def test_decode_batches_takes_the_wrapper_when_ray_did_not_pickle_it(tmp_path):
    ext = create_extractor("neardup_cd", input_size=96, engine="torch")
    Image.new("RGB", (64, 48), (90, 120, 150)).save(tmp_path / "a.png")
    batch = {"batch": np.asarray([0]), "paths": np.asarray([str(tmp_path / "a.png")], dtype=object)}
    out = decode_batches(batch, Portable(ext.transform), ext.draft_size, 10**8)
    x = unpack(out["x"][0])
    assert x.shape == (1, 3, 96, 96)
    assert np.allclose(x[0], ext.transform(Image.open(tmp_path / "a.png").convert("RGB")).numpy())
