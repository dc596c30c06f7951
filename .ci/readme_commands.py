"""Print the README's first two commands (its first ```bash block, comments left out), one a line, so that CI runs
exactly what the README tells a new user and the README cannot drift from what is tested."""
import pathlib
import re
import sys

readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
block = re.search(r"```bash\n(.*?)```", readme, re.S)
commands = [line.strip() for line in (block.group(1) if block else "").splitlines()
            if line.strip() and not line.strip().startswith("#")]
if len(commands) != 2:
    sys.exit(f"README.md's first bash block should hold 2 commands (install and run, install and test), "
             f"found {len(commands)}")
print("\n".join(commands))
