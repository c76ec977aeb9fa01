"""``import noisegrad`` stays light: figures load on first use (the app layering is in test_app_layering.py)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "noisegrad"
APP = "noisegrad.app"

PROBE = textwrap.dedent(
    """
    import json, sys
    import noisegrad

    def loaded(name):
        return sorted(m for m in sys.modules if m == name or m.startswith(name + "."))

    report = {"file": noisegrad.__file__, "viz_after_import": loaded("noisegrad.viz"),
              "app_after_import": loaded("noisegrad.app")}
    plot = noisegrad.viz.plot_image_attr
    from noisegrad import viz
    report["viz_after_access"] = "noisegrad.viz" in sys.modules
    report["same_module"] = viz is sys.modules["noisegrad.viz"] and plot is viz.plot_image_attr
    report["viz_in_all"] = "viz" in noisegrad.__all__
    print(json.dumps(report))
    """
)


def test_import_leaves_viz_and_app_out_until_viz_is_used():
    # This worktree's noisegrad, not an installed copy: put the repository first on the path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=PACKAGE.parent, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).resolve().parent == PACKAGE
    assert report["viz_after_import"] == [], "import noisegrad imported its figures"
    assert report["app_after_import"] == [], "import noisegrad imported the app"
    assert report["viz_after_access"] and report["same_module"] and report["viz_in_all"]


# --------------------------------------------------------------------------- the library does not import the app


def test_every_name_in_all_is_exported_and_every_public_class_or_function_is_in_all():
    import noisegrad

    assert all(hasattr(noisegrad, name) for name in noisegrad.__all__)
    public = {name for name, value in vars(noisegrad).items() if not name.startswith("_") and callable(value)
              and getattr(value, "__module__", "").startswith("noisegrad")}
    assert public <= set(noisegrad.__all__)
    assert {"attribute_dataset", "DatasetAttributions"} <= set(noisegrad.__all__)
