"""Helpers shared by the fault-injection tests."""

import psutil


def children_marked(mark: str) -> list[psutil.Process]:
    """Live processes of this test's gateway whose arguments carry `mark`."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if mark in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found
