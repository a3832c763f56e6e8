"""Summarize a py-spy `--format raw` (collapsed stacks) file: where the gateway spends its CPU.

    .venv/bin/python bench/pyspy_summary.py bench/out/STAMP/pyspy-streamable-c8.txt [--top 25]

Prints the share of samples per leaf function (self time), per frame anywhere on the stack (inclusive time),
and per area of the code (the known area nearest the leaf decides, so areas add up to 100 %).
"""

import argparse
import collections
import re
import sys
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
# Areas of the code: a sample belongs to the area of the frame nearest its leaf that matches one of these.
AREAS = [
    ("audit log (mcp_bastion/audit.py)", "mcp_bastion/audit.py"),
    ("rate limiting (limits + ratelimit.py)", "limits/"),
    ("rate limiting (limits + ratelimit.py)", "mcp_bastion/ratelimit.py"),
    ("authentication (middleware/auth.py, security.py)", "mcp_bastion/security.py"),
    ("authentication (middleware/auth.py, security.py)", "mcp_bastion/middleware/auth.py"),
    ("security middleware (other stages)", "mcp_bastion/middleware/"),
    ("child pipe I/O (supervisor)", "mcp_bastion/supervisor/"),
    ("relay (relay/)", "mcp_bastion/relay/"),
    ("transports (transports/)", "mcp_bastion/transports/"),
    ("app router (app.py)", "mcp_bastion/app.py"),
    ("uvicorn HTTP protocol", "uvicorn/"),
    ("asyncio / event loop", "asyncio/"),
]


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = raw.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            match = FRAME.match(part)
            frames.append((match["func"], match["file"]) if match else (part, ""))
        stacks.append((frames, int(count)))
    return stacks


def area_of(frames: list[tuple[str, str]]) -> str:
    """The area of the frame nearest the leaf that belongs to one (C code counts for its Python caller)."""
    for _, file in reversed(frames):
        for name, pattern in AREAS:
            if pattern in file:
                return name
    return "other (" + (frames[-1][1].rsplit("/", 1)[-1] if frames else "?") + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    for path in args.files:
        stacks = parse(path)
        total = sum(count for _, count in stacks) or 1
        leaf: collections.Counter[str] = collections.Counter()
        inclusive: collections.Counter[str] = collections.Counter()
        areas: collections.Counter[str] = collections.Counter()
        for frames, count in stacks:
            if frames:
                func, file = frames[-1]
                leaf[f"{func} ({file})"] += count
            for func, file in {(f, fl) for f, fl in frames}:
                inclusive[f"{func} ({file})"] += count
            areas[area_of(frames)] += count
        print(f"== {path} : {total} samples")
        print("-- by area (a sample goes to the area of its frame nearest the leaf)")
        for name, count in areas.most_common():
            print(f"  {100 * count / total:5.1f} %  {name}")
        print(f"-- top {args.top} inclusive frames")
        for name, count in inclusive.most_common(args.top):
            print(f"  {100 * count / total:5.1f} %  {name}")
        print(f"-- top {args.top} self (leaf) frames")
        for name, count in leaf.most_common(args.top):
            print(f"  {100 * count / total:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
