"""Write the project's requirement lists for the image build: `python3 requirements.py TF_PACKAGE OUT`.

OUT/runtime.txt is [project.dependencies] with TensorFlow as TF_PACKAGE at the same version (the CPU-only
wheel `tensorflow-cpu`, or `tensorflow[and-cuda]`); OUT/<group>.txt is each optional-dependency group.
A stage of its own, so editing another part of pyproject.toml does not rebuild the install layers.
"""

import re
import sys
import tomllib
from pathlib import Path

tensorflow, out = sys.argv[1], Path(sys.argv[2])
project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
out.mkdir(parents=True, exist_ok=True)
runtime = [re.sub(r"^tensorflow(?=[\s<>=!~;]|$)", tensorflow, r) for r in project["dependencies"]]
(out / "runtime.txt").write_text("\n".join(runtime) + "\n")
for group, requirements in project["optional-dependencies"].items():
    (out / f"{group}.txt").write_text("\n".join(requirements) + "\n")
