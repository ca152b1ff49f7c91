#!/usr/bin/env python3
"""ELF's query.py: hands its arguments over to query-py.sh (elf-tools), which does the work.

Installed as ~/.claude/emergent-learning/query/query.py (see elf-tools' README), it finds
query-py.sh beside itself (a symbolic link to it), in ../scripts/, or on PATH.
"""
import os
import sys

here = os.path.dirname(os.path.realpath(__file__))
for script in (os.path.join(here, "query-py.sh"), os.path.join(here, "..", "scripts", "query-py.sh")):
    if os.path.exists(script):
        os.execv(script, [script] + sys.argv[1:])
try:
    os.execvp("query-py.sh", ["query-py.sh"] + sys.argv[1:])
except OSError:
    sys.stderr.write("query.py: query-py.sh not found beside query.py, in ../scripts or on PATH (see elf-tools' README)\n")
    sys.exit(69)
