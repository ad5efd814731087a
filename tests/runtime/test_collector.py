"""A command holds Python's collector during its imports and freezes what they built; importing
tl as a library leaves collection as it was."""

import gc
import subprocess
import sys


def test_importing_the_training_entry_as_a_library_keeps_collection_on():
    import tl.train  # noqa: F401

    assert gc.isenabled()


def test_a_command_collects_again_once_its_imports_are_done():
    code = ("import gc, runpy, sys; sys.argv = ['tl.train', '--help'];"
            "import tl.train as t; t.collector.hold(); assert not gc.isenabled();"
            "t.collector.release(); assert gc.isenabled() and gc.get_freeze_count() > 0")
    subprocess.run([sys.executable, "-c", code], check=True)
