"""bench/RESULTS.md is assembled from sections, each rewritten by the script that measures it."""
import datetime
import os
import platform
import re

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
HEADER = "# Benchmark results\n\nEach section is rewritten by the script named in it; all figures come from one run of that script.\n"


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


def path_line():
    """What a table of kvant's speed names: the CPU, the features the kernel paths look at, and the path in force."""
    from kvant.formats import host
    features = " ".join(f for f in host.REPORTED_FEATURES if f in host.host_features())
    forced = " (forced by KVANT_CPU_PATH)" if os.environ.get("KVANT_CPU_PATH") else ""
    if host.FORCED_WITHOUT:         # host.forced_features: the code is what a CPU of that path runs
        forced += f", compiled without {', '.join(host.FORCED_WITHOUT)}"
    return f"CPU: {host.cpu_model()}; features: {features}; kvant's kernel path: {host.CPU_PATH}{forced}"


def path_section(name):
    """The section of a table measured on the path in force: one per path, so that a run on an AVX2 machine (or a
    forced path) keeps the AVX-512 machine's table under the plain name."""
    from kvant.formats import host
    forced = bool(os.environ.get("KVANT_CPU_PATH"))
    if host.CPU_PATH == "avx512vnni" and not forced:
        return name
    suffix = f"{host.CPU_PATH.upper()}" + (" FORCED" if forced else "")
    # a name that already says its path (as whole words; an unforced run's not followed by FORCED) keeps it once
    says_it = re.search(rf"(?<!\S){re.escape(suffix)}(?!\S)" + ("" if forced else "(?! FORCED)"), name, re.I)
    return name if says_it else f"{name} {suffix}"


def update_section(name, body):
    """Replace the text between <!-- name --> markers (appending the section if it is new)."""
    text = open(PATH, encoding="utf-8").read() if os.path.exists(PATH) else HEADER
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    stamp = f"_{datetime.date.today().isoformat()}, {machine()}_\n\n"
    block = f"{start}\n## {name.title()}\n\n{stamp}{body}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(PATH, "w", encoding="utf-8") as f:
        f.write(text)


def publish(name, body, write=True):
    """Print a section's body and, when write, put it into RESULTS.md."""
    print("\n" + body)
    if write:
        update_section(name, body)
