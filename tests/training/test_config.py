import subprocess
import sys

from training.config import ARCHITECTURE_NAMES


def test_the_config_names_every_architecture():
    from training.inception_v2 import ARCHITECTURES

    assert sorted(ARCHITECTURE_NAMES) == sorted(ARCHITECTURES)


def test_help_answers_without_importing_tensorflow():
    """`python -m training [command] --help` prints its help from a process that never loads TensorFlow."""
    script = (
        "import runpy, sys\n"
        "for command in ([], ['train'], ['evaluate'], ['make-demo-data']):\n"
        "    sys.argv = ['training', *command, '--help']\n"
        "    try:\n"
        "        runpy.run_module('training', run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code == 0, exit.code\n"
        "print('loaded:', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "--tensorboard-dir" in result.stdout
    assert "--augment" in result.stdout
    assert "--version" in result.stdout
    assert result.stdout.endswith("loaded: []\n")
